-- Concurrency: a thousand coroutines of mixed reads and writes keep the database's invariants,
-- every coroutine runs exactly once, and nothing is lost or done twice, whatever the pool's
-- shape (readers, stealing).
local sqlite = require "pasyn_sqlite"
local support = require "support"

local tmpdb = support.tmpdb

local ACCOUNTS = 50
local START_BALANCE = 1000
local TOTAL = ACCOUNTS * START_BALANCE
local COROUTINES = 1000

-- One statement that moves `amount` from account a to account b: the total never changes.
local MOVE = [[UPDATE acct SET bal = bal + CASE id WHEN ? THEN -? WHEN ? THEN ? END
               WHERE id IN (?, ?)]]

-- The transfer coroutine i makes: two different accounts and an amount, all from i.
local function transfer(i)
    local a = i % ACCOUNTS + 1
    local b = (i * 7 + 3) % ACCOUNTS + 1
    if b == a then
        b = a % ACCOUNTS + 1
    end
    return a, b, i % 37 + 1
end

local function setup_accounts(conn)
    conn:execute("CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)")
    local rows = {}
    for id = 1, ACCOUNTS do
        rows[id] = { id, START_BALANCE }
    end
    conn:executemany("INSERT INTO acct VALUES (?, ?)", rows)
end

-- Runs COROUTINES coroutines: two in three move money, one in three reads the total.
-- Returns the run's observations.
local function bank_run(conn)
    local obs = { ran = {}, runs = 0, bad_sums = {}, sums_read = 0, moved = 0, bad_rowcounts = 0 }
    sqlite.run(function()
        for i = 1, COROUTINES do
            sqlite.spawn(function()
                obs.ran[i] = (obs.ran[i] or 0) + 1
                obs.runs = obs.runs + 1
                if i % 3 == 0 then
                    local row = conn:execute("SELECT sum(bal), count(*) FROM acct"):fetchone()
                    obs.sums_read = obs.sums_read + 1
                    if row[1] ~= TOTAL or row[2] ~= ACCOUNTS then
                        obs.bad_sums[#obs.bad_sums + 1] = { i, row[1], row[2] }
                    end
                else
                    local a, b, amount = transfer(i)
                    local cur = conn:execute(MOVE, a, amount, b, amount, a, b)
                    if cur.rowcount ~= 2 then
                        obs.bad_rowcounts = obs.bad_rowcounts + 1
                    end
                    obs.moved = obs.moved + 1
                    -- and a read right after the write, from the same coroutine
                    local sum = conn:execute("SELECT sum(bal) FROM acct"):fetchone()[1]
                    obs.sums_read = obs.sums_read + 1
                    if sum ~= TOTAL then
                        obs.bad_sums[#obs.bad_sums + 1] = { i, sum }
                    end
                end
            end)
        end
    end)
    return obs
end

-- The balances every transfer applied exactly once leads to (order does not matter).
local function expected_balances()
    local bal = {}
    for id = 1, ACCOUNTS do
        bal[id] = START_BALANCE
    end
    for i = 1, COROUTINES do
        if i % 3 ~= 0 then
            local a, b, amount = transfer(i)
            bal[a] = bal[a] - amount
            bal[b] = bal[b] + amount
        end
    end
    return bal
end

local function assert_bank(conn, obs)
    local writers = COROUTINES - math.floor(COROUTINES / 3)
    assert.equal(COROUTINES, obs.runs)
    for i = 1, COROUTINES do
        assert.equal(1, obs.ran[i], "coroutine " .. i .. " ran " .. tostring(obs.ran[i]) .. " times")
    end
    assert.equal(writers, obs.moved)
    assert.equal(0, obs.bad_rowcounts)
    assert.equal(COROUTINES, obs.sums_read)
    assert.same({}, obs.bad_sums)
    assert.equal(TOTAL, conn:execute("SELECT sum(bal) FROM acct"):fetchone()[1])
    local want = expected_balances()
    local got = {}
    for row in conn:execute("SELECT id, bal FROM acct ORDER BY id"):rows() do
        got[row[1]] = row[2]
    end
    assert.same(want, got)
    assert.same({ { "ok", n = 1 } }, conn:execute("PRAGMA integrity_check"):fetchall())
end

local K = 40 -- rows each inserting coroutine adds

-- n coroutines each insert K rows with their own ids and read their own rows back.
local function insert_run(conn, n)
    local obs = { ran = 0, own_counts = {} }
    sqlite.run(function()
        for c = 1, n do
            sqlite.spawn(function()
                obs.ran = obs.ran + 1
                for k = 1, K do
                    local cur = conn:execute("INSERT INTO ins (id, who) VALUES (?, ?)", (c - 1) * K + k, c)
                    assert.equal(1, cur.rowcount)
                    if k % 10 == 0 then
                        sqlite.sleep(0) -- let the others interleave
                    end
                end
                local mine = conn:execute("SELECT count(*) FROM ins WHERE who = ?", c):fetchone()[1]
                obs.own_counts[c] = mine
            end)
        end
    end)
    return obs
end

local function assert_inserts(conn, n, obs)
    assert.equal(n, obs.ran)
    for c = 1, n do
        assert.equal(K, obs.own_counts[c], "coroutine " .. c .. " read back its rows")
    end
    local row = conn:execute("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM ins"):fetchone()
    assert.same({ n * K, n * K, 1, n * K, n = 4 }, row)
    assert.same({}, conn:execute("SELECT id FROM ins GROUP BY id HAVING count(*) <> 1"):fetchall())
    assert.same({ { "ok", n = 1 } }, conn:execute("PRAGMA integrity_check"):fetchall())
end

local SHAPES = {
    { name = "the default pool (3 readers, stealing)", options = nil },
    { name = "1 reader without stealing", options = { readers = 1, stealing = false } },
    { name = "3 readers without stealing", options = { readers = 3, stealing = false } },
    { name = "no readers", options = { readers = 0 } },
}

describe("concurrency", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = tmpdb()
    end)
    after_each(function()
        if conn then
            conn:close()
            conn = nil
        end
        cleanup()
    end)

    for _, shape in ipairs(SHAPES) do
        describe("on " .. shape.name, function()
            it("1000 coroutines moving money with single UPDATEs never change the total", function()
                conn = sqlite.connect(path, shape.options)
                setup_accounts(conn)
                assert_bank(conn, bank_run(conn))
            end)

            it("50 coroutines inserting 40 rows each leave 2000 rows, each id once", function()
                conn = sqlite.connect(path, shape.options)
                conn:execute("CREATE TABLE ins (id INTEGER NOT NULL, who INTEGER NOT NULL)")
                local obs = insert_run(conn, 50)
                assert_inserts(conn, 50, obs)
            end)
        end)
    end

    it("the bank keeps its total on a shared :memory: database", function()
        conn = sqlite.connect(":memory:")
        setup_accounts(conn)
        assert_bank(conn, bank_run(conn))
    end)

    it("the bank's balances survive close and reopen", function()
        conn = sqlite.connect(path)
        setup_accounts(conn)
        bank_run(conn)
        conn:close()
        conn = sqlite.connect(path)
        assert.equal(TOTAL, conn:execute("SELECT sum(bal) FROM acct"):fetchone()[1])
        local want = expected_balances()
        for row in conn:execute("SELECT id, bal FROM acct"):rows() do
            assert.equal(want[row[1]], row[2])
        end
    end)

    it("two batches of 1000 coroutines on one connection keep the invariant", function()
        conn = sqlite.connect(path)
        setup_accounts(conn)
        local first = bank_run(conn)
        assert.same({}, first.bad_sums)
        local second = bank_run(conn)
        assert.same({}, second.bad_sums)
        assert.equal(COROUTINES, second.runs)
        assert.equal(TOTAL, conn:execute("SELECT sum(bal) FROM acct"):fetchone()[1])
        -- every transfer applied twice
        local once = expected_balances()
        for row in conn:execute("SELECT id, bal FROM acct"):rows() do
            assert.equal(2 * once[row[1]] - START_BALANCE, row[2])
        end
    end)

    it("coroutines reading while others insert see counts that never go down", function()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE ins (id INTEGER NOT NULL, who INTEGER NOT NULL)")
        local went_down, reads = 0, 0
        local writers_done = 0
        sqlite.run(function()
            for c = 1, 20 do
                sqlite.spawn(function()
                    for k = 1, K do
                        conn:execute("INSERT INTO ins (id, who) VALUES (?, ?)", (c - 1) * K + k, c)
                    end
                    writers_done = writers_done + 1
                end)
            end
            for _ = 1, 10 do
                sqlite.spawn(function()
                    local last = 0
                    while writers_done < 20 do
                        local n = conn:execute("SELECT count(*) FROM ins"):fetchone()[1]
                        reads = reads + 1
                        if n < last then
                            went_down = went_down + 1
                        end
                        last = n
                    end
                end)
            end
        end)
        assert.equal(0, went_down)
        assert.is_true(reads >= 10)
        assert.equal(20 * K, conn:execute("SELECT count(*) FROM ins"):fetchone()[1])
    end)
end)
