-- Edges of the features that extend SQLite from Lua (functions, aggregates, collations, trace,
-- on_change, backup, serialize, deserialize) as a demanding user meets them: strings SQLite
-- takes as C strings, and what the README says of each feature's limits.
local sqlite = require "pasyn_sqlite"
local support = require "support"

describe("extending SQLite from Lua, at the edges", function()
    it("refuses a NUL byte in a path or a name that SQLite takes as a C string", function()
        -- SQLite would read only up to the NUL: another file or name than the one written
        local path = support.temp_path()
        local cut = path:sub(1, -4) -- what the path would be cut to: no such file appears
        support.raises("ProgrammingError", sqlite.connect, cut .. "\0.db")
        assert.is_false(support.exists(cut))
        support.raises("ProgrammingError", sqlite.connect, ":memory:",
                       { pragmas = { cache_size = "100\0x" } })
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE t(x)")
        local fn = function() return 1 end
        support.raises("ProgrammingError", conn.create_function, conn, "f\0g", 0, fn)
        support.raises("ProgrammingError", conn.create_aggregate, conn, "f\0g", 0, fn)
        support.raises("ProgrammingError", conn.create_collation, conn, "f\0g", fn)
        support.raises("OperationalError", conn.execute, conn, "SELECT f()") -- none defined
        support.raises("ProgrammingError", conn.serialize, conn, "main\0x")
        support.raises("ProgrammingError", conn.backup, conn, cut .. "\0.db")
        support.raises("ProgrammingError", conn.backup, conn, path, { name = "main\0x" })
        assert.is_false(support.exists(cut))
        assert.is_false(support.exists(path))
        assert.are.equal(1, support.scalar(conn, "SELECT 1")) -- the pool goes on
        conn:close()
    end)

    it("keeps the groups of aggregates of several pools apart while they run at once", function()
        -- Each pool numbers its groups; the groups of every pool of a Lua state are served in
        -- one place, so the numbers must not meet.
        local conns, results = {}, {}
        for p = 1, 3 do
            local conn = sqlite.connect(":memory:")
            conn:execute("CREATE TABLE t(k, v)")
            conn:execute([[WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c
                           WHERE i < 3000) INSERT INTO t SELECT i % 4, i FROM c]])
            conn:create_aggregate("tagged_sum", 1, function()
                return { s = 0, step = function(o, v) o.s = o.s + v end,
                         finalize = function(o) return p * 100000000 + o.s end }
            end)
            conns[p] = conn
        end
        sqlite.run(function()
            for p = 1, 3 do
                sqlite.spawn(function()
                    results[p] = conns[p]:execute(
                        "SELECT k, tagged_sum(v) FROM t GROUP BY k ORDER BY k"):fetchall()
                end)
            end
        end)
        for p = 1, 3 do
            local want = {}
            for r in conns[p]:execute("SELECT k, sum(v) FROM t GROUP BY k ORDER BY k"):rows() do
                want[#want + 1] = { r[1], p * 100000000 + r[2], n = 2 }
            end
            assert.are.same(want, results[p])
            conns[p]:close()
        end
    end)

    it("takes a callable object for trace, on_change and a backup's progress", function()
        -- as create_function and create_aggregate do (Python's sqlite3 takes any callable)
        local conn = sqlite.connect(":memory:")
        local seen = {}
        local function recorder(tag)
            return setmetatable({}, { __call = function(_, ...)
                seen[#seen + 1] = tag .. ":" .. select("#", ...)
            end })
        end
        conn:trace(recorder("trace"))
        conn:on_change(recorder("change"))
        conn:execute("CREATE TABLE t(x)")
        conn:execute("INSERT INTO t VALUES (1)")
        local dest = support.temp_path()
        conn:trace(nil)
        conn:on_change(nil)
        conn:backup(dest, { progress = recorder("progress") })
        assert.are.same({ "trace:2", "trace:2", "change:4", "progress:2" }, seen)
        support.raises("ProgrammingError", conn.trace, conn, {})
        support.raises("ProgrammingError", conn.on_change, conn, setmetatable({}, {}))
        support.raises("ProgrammingError", conn.backup, conn, dest, { progress = {} })
        conn:close()
        support.remove_db(dest)
    end)

    it("refuses an aggregate as a window function, as SQLite does without xInverse", function()
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE t(x)")
        conn:executemany("INSERT INTO t VALUES (?)", { { 1 }, { 2 }, { 3 } })
        conn:create_aggregate("total_of", 1, function()
            return { s = 0, step = function(o, v) o.s = o.s + v end,
                     finalize = function(o) return o.s end }
        end)
        assert.are.equal(6, support.scalar(conn, "SELECT total_of(x) FROM t"))
        local err = support.raises("OperationalError", conn.execute, conn,
                                   "SELECT total_of(x) OVER (ORDER BY x) FROM t")
        assert.matches("may not be used as a window function", err.message)
        assert.are.equal(6, support.scalar(conn, "SELECT total_of(x) FROM t"))
        conn:close()
    end)
end)
