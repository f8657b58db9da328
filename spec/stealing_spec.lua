-- Work stealing among readers: an idle reader takes reads queued behind a busy one, short reads
-- go before long ones, and the option that turns it off really turns it off. Every read runs
-- exactly once either way.
local sqlite = require "pasyn_sqlite"
local support = require "support"

-- The statements counted here are the readers' own: the pools run no read on the caller's
-- thread (inline_reads = false), which the readers would not count.
local function readers_only(options)
    options = options or {}
    options.inline_reads = false
    return options
end

local function count_to(n)
    return "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < " .. n ..
           ") SELECT count(*) FROM c"
end

-- On two readers: a long read takes one, a medium read the other; while both are busy,
-- `quick` short reads are queued round-robin on the two, so half of them wait behind the
-- long read unless the reader freed by the medium one steals them. Returns the order in
-- which the reads finished and the pool's stats.
local function long_medium_quick(options, quick)
    local conn = sqlite.connect(":memory:", readers_only(options))
    local order = {}
    sqlite.run(function()
        local function read(label, sql, ...)
            return sqlite.spawn(function(...)
                local v = conn:execute(sql, ...):fetchone()[1]
                order[#order + 1] = label or v
                return v
            end, ...)
        end
        local long = read("long", count_to(3000000))
        sqlite.sleep(0.02) -- the long read is running on one reader
        local medium = read("medium", count_to(300000))
        sqlite.sleep(0.005) -- and the medium one on the other
        local quicks = {}
        for i = 1, quick do
            quicks[i] = read(nil, "SELECT ? + 0", i)
        end
        assert.equal(3000000, long:join())
        assert.equal(300000, medium:join())
        for i = 1, quick do
            assert.equal(i, quicks[i]:join())
        end
    end)
    local stats = conn:stats()
    conn:close()
    return order, stats
end

local function stolen(stats)
    return support.readers_sum(stats, "stolen")
end

-- Runs read(i) for i = 1..n, each in a coroutine of its own, and checks that each ran exactly
-- once, on exactly one reader; returns the pool's stats before and after.
local function each_once(conn, n, read)
    local seen, runs = {}, 0
    local before = conn:stats()
    sqlite.run(function()
        for i = 1, n do
            sqlite.spawn(function()
                read(i)
                seen[i] = (seen[i] or 0) + 1
                runs = runs + 1
            end)
        end
    end)
    assert.equal(n, runs)
    for i = 1, n do
        assert.equal(1, seen[i])
    end
    local after, executed = conn:stats(), 0
    for i, r in ipairs(after.readers) do
        executed = executed + r.executed - before.readers[i].executed
    end
    assert.equal(n, executed) -- each read ran once, on exactly one reader
    return before, after
end

describe("work stealing", function()
    it("lets an idle reader take the reads queued behind a long one", function()
        local order, stats = long_medium_quick({ readers = 2 }, 40)
        assert.equal(42, #order)
        assert.equal("long", order[#order]) -- no quick read waited for the long one
        assert.is_true(stolen(stats) > 0)
    end)

    it("is off with stealing = false: nothing is stolen and reads wait in their reader's queue", function()
        local order, stats = long_medium_quick({ readers = 2, stealing = false }, 40)
        assert.equal(42, #order)
        assert.equal(0, stolen(stats))
        assert.are_not.equal("long", order[#order]) -- some quick reads queued behind it
    end)

    for _, stealing in ipairs({ true, false }) do
        it("runs every read exactly once under load (stealing = " .. tostring(stealing) .. ")", function()
            local conn = sqlite.connect(":memory:", readers_only({ readers = 3, stealing = stealing }))
            conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            conn:executemany("INSERT INTO t VALUES (?)", (function()
                local s = {}
                for i = 1, 1000 do
                    s[i] = { i }
                end
                return s
            end)())
            local _, after = each_once(conn, 2000, function(i)
                local id = (i - 1) % 1000 + 1
                assert.equal(id, conn:execute("SELECT id FROM t WHERE id = ?", id):fetchone()[1])
            end)
            if not stealing then
                assert.equal(0, stolen(after))
            end
            conn:close()
        end)
    end
    -- Short reads queued behind long ones: with stealing, a reader takes the short ones first
    -- (once the pool has seen the long SQL run long); without it, its queue is served in order.
    local function long_long_short(options)
        local conn = sqlite.connect(":memory:", readers_only(options))
        conn:execute(count_to(300000)):fetchone() -- now known as a long read
        local order = {}
        sqlite.run(function()
            local function read(label, sql)
                return sqlite.spawn(function()
                    conn:execute(sql):fetchone()
                    order[#order + 1] = label
                end)
            end
            local hs = { read("long 1", count_to(300000)) }
            sqlite.sleep(0.01) -- long 1 is running on the only reader
            hs[2] = read("long 2", count_to(300000))
            hs[3] = read("short", "SELECT 1")
            for i = 1, 3 do
                hs[i]:join()
            end
        end)
        conn:close()
        return order
    end

    it("runs a short read queued behind a long one before it", function()
        assert.same({ "long 1", "short", "long 2" }, long_long_short({ readers = 1 }))
    end)

    it("keeps its queue's order with stealing = false", function()
        assert.same({ "long 1", "long 2", "short" }, long_long_short({ readers = 1, stealing = false }))
    end)

    it("runs every read exactly once when short reads overtake long ones", function()
        local conn = sqlite.connect(":memory:", readers_only({ readers = 3 }))
        conn:execute(count_to(30000)):fetchone() -- known as a long read
        local before, after = each_once(conn, 1500, function(i)
            if i % 50 == 0 then
                assert.equal(30000, conn:execute(count_to(30000)):fetchone()[1])
            else
                assert.equal(i, conn:execute("SELECT ? + 0", i):fetchone()[1])
            end
        end)
        assert.is_true(stolen(after) - stolen(before) > 0)
        conn:close()
    end)

    -- A burst submitted while one reader is watching for work (right after it served a read)
    -- must not all queue on that reader while the other stays parked.
    it("spreads a burst of long reads over both readers", function()
        local conn = sqlite.connect(":memory:", readers_only({ readers = 2 }))
        for _ = 1, 5 do
            local before = conn:stats()
            sqlite.run(function()
                conn:execute("SELECT 1"):fetchone() -- a reader is now spinning for work
                local hs = {}
                for i = 1, 6 do
                    hs[i] = sqlite.spawn(function()
                        return conn:execute(count_to(300000)):fetchone()[1]
                    end)
                end
                for i = 1, 6 do
                    assert.equal(300000, hs[i]:join())
                end
            end)
            local after = conn:stats()
            -- Left parked, a reader runs none of them; how many each runs otherwise depends on
            -- how the machine's cores are shared at the time.
            for i = 1, 2 do
                local ran = after.readers[i].executed - before.readers[i].executed
                assert.is_true(ran >= 1, "reader " .. i .. " ran none of the 7 reads")
            end
        end
        conn:close()
    end)
end)
