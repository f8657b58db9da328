-- Helpers shared by the specs: temporary database files, raises(), scalar(), what many
-- coroutines read at once, and stats sums.
-- The specs' LUA_PATH holds spec/?.lua, so `local support = require "support"` finds this.
local sqlite = require "pasyn_sqlite"
local assert = require "luassert"

local support = {}

support.pack = table.pack or function(...) return { n = select("#", ...), ... } end
support.unpack = table.unpack or unpack

-- Removes a database file and its -wal, -shm and -journal companions.
function support.remove_db(path)
    for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do
        os.remove(path .. suffix)
    end
end

-- A fresh path for a database file in the temp directory (nothing exists there yet).
function support.temp_path()
    local name = os.tmpname()
    os.remove(name)
    return name .. ".db"
end

-- A database path from os.tmpname() (an empty file), and a function that removes the file
-- and its companions.
function support.tmpdb()
    local path = os.tmpname()
    return path, function()
        support.remove_db(path)
    end
end

-- Calls fn(...), which must fail with an error object of `kind`; returns that error.
function support.raises(kind, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected a " .. kind .. ", but the call succeeded")
    assert.is_true(sqlite.is_error(err), "expected an error object, got: " .. tostring(err))
    assert.are.equal(kind, err.kind, tostring(err))
    return err
end

-- The first value of the first row of sql (nil when there is no row).
function support.scalar(conn, sql, ...)
    local row = conn:execute(sql, ...):fetchone()
    return row and row[1]
end

-- The values that `sql` (its first row's first value, as scalar gives it) gives from n
-- coroutines at once, as a { value = count } table. Run at once, they spread over the pool's
-- readers, so that every reader answers some of them. Returns when they are all done (it
-- runs them with sqlite.run).
function support.counts_everywhere(conn, sql, n)
    local seen = {}
    sqlite.run(function()
        for _ = 1, n do
            sqlite.spawn(function()
                local v = support.scalar(conn, sql)
                seen[v] = (seen[v] or 0) + 1
            end)
        end
    end)
    return seen
end

-- The first column of every row of sql, as a flat array.
function support.column(conn, sql, ...)
    local out = {}
    for row in conn:execute(sql, ...):rows() do
        out[#out + 1] = row[1]
    end
    return out
end

-- The sum of one per-reader counter (executed, stolen, ...) over stats.readers of a
-- conn:stats() table.
function support.readers_sum(stats, field)
    local total = 0
    for _, r in ipairs(stats.readers) do
        total = total + r[field]
    end
    return total
end

-- How many readers of conn hold a streamed result now.
function support.streaming_readers(conn)
    local n = 0
    for _, r in ipairs(conn:stats().readers) do
        n = n + (r.streaming and 1 or 0)
    end
    return n
end

-- Polls (about two seconds at most) until no reader streams: a released stream ends on its
-- reader's thread a moment later, and a dropped cursor releases its stream when collected.
-- Returns how many still stream.
function support.wait_no_stream(conn)
    for _ = 1, 200 do
        if support.streaming_readers(conn) == 0 then
            return 0
        end
        collectgarbage()
        sqlite.sleep(0.01)
    end
    return support.streaming_readers(conn)
end

-- A host loop's ticker kept firing during a long query: `inside` holds the times of the ticks
-- that fell in it (to_ms turns the difference of two into milliseconds), duration_ms how long
-- the query took, tick_ms the ticker's period. Prints their lateness (to stderr, for the log)
-- and checks at least 5 ticks, and a third of those the duration allows: a loop the query
-- blocked sees none.
function support.check_ticks(label, duration_ms, tick_ms, inside, to_ms)
    local max, sum = 0, 0
    for i = 2, #inside do
        local late = to_ms(inside[i] - inside[i - 1]) - tick_ms
        max, sum = math.max(max, late), sum + late
    end
    io.stderr:write(("\n[%s] query %.0f ms, %d ticks inside, lateness max %.1f ms, mean %.2f ms\n")
        :format(label, duration_ms, #inside, max, sum / math.max(1, #inside - 1)))
    assert.is_true(#inside >= 5, ("only %d ticks during the query"):format(#inside))
    assert.is_true(#inside >= duration_ms / tick_ms / 3,
                   ("%d ticks in %.0f ms"):format(#inside, duration_ms))
end

return support
