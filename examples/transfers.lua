-- Many coroutines share one connection: transfers in transactions of their own, audit rows
-- written as plain autocommit INSERTs (the writer commits those together), and a reader that
-- checks the total while all of it runs.
local sqlite = require "pasyn_sqlite"

local ACCOUNTS, WORKERS, TRANSFERS = 10, 16, 50

sqlite.run(function()
    local conn = sqlite.connect(":memory:", { synchronous = "full" })
    conn:executescript([[
        CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0));
        CREATE TABLE audit (id INTEGER PRIMARY KEY, worker INTEGER, note TEXT);
    ]])
    for id = 1, ACCOUNTS do
        conn:execute("INSERT INTO account VALUES (?, 100)", id)
    end

    local refused, done = 0, false
    local workers = {}
    for w = 1, WORKERS do
        workers[w] = sqlite.spawn(function()
            for i = 1, TRANSFERS do
                local from, to = (w + i) % ACCOUNTS + 1, (w * i) % ACCOUNTS + 1
                local ok, err = pcall(conn.transaction, conn, function()
                    conn:execute("UPDATE account SET balance = balance - 7 WHERE id = ?", from)
                    conn:execute("UPDATE account SET balance = balance + 7 WHERE id = ?", to)
                end)
                if not ok then
                    assert(sqlite.is_error(err) and err:is(sqlite.IntegrityError), tostring(err))
                    refused = refused + 1 -- the CHECK refused an overdraft; nothing moved
                end
                conn:execute("INSERT INTO audit (worker, note) VALUES (?, ?)", w,
                             ok and "moved" or "refused")
            end
        end)
    end
    local checker = sqlite.spawn(function()
        local checks = 0
        repeat
            local total = conn:execute("SELECT sum(balance) FROM account"):fetchone()[1]
            assert(total == ACCOUNTS * 100, "the total changed: " .. total)
            checks = checks + 1
            sqlite.sleep(0.001)
        until done
        return checks
    end)
    for w = 1, WORKERS do
        workers[w]:join()
    end
    done = true
    local checks = checker:join()

    local audit = conn:execute("SELECT count(*) FROM audit"):fetchone()[1]
    local writer = conn:stats().writer
    print(("transfers: %d, refused: %d, audit rows: %d, total checked %d times"):format(
        WORKERS * TRANSFERS, refused, audit, checks))
    print(("group commit: %d batches of %d statements, the largest %d"):format(
        writer.batches, writer.batched, writer.batch_max))
    conn:close()
end)
