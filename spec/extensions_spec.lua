-- The `extensions` option: shared libraries loaded on every connection of a pool at open (the
-- writer, the readers, the classifier), through SQLite's C API alone; SQL's load_extension()
-- stays refused; a library that fails to load fails connect with an error naming it, and
-- leaves no thread behind. The library is c/test/ext_hello.c, built beside the module
-- (make test-ext): hello() and ext_twice(x).
local sqlite = require "pasyn_sqlite"
local support = require "support"

local EXT = package.searchpath("ext_hello", package.cpath)
assert(EXT, "ext_hello.so not found on package.cpath: build it with make test-ext")

local function reads_on_readers(conn)
    return support.readers_sum(conn:stats(), "executed")
end

describe("the extensions option", function()
    it("loads a library on the writer and on every reader", function()
        local path, cleanup = support.tmpdb()
        local conn = sqlite.connect(path, { extensions = { EXT } })
        assert.are.equal("hello", support.scalar(conn, "SELECT hello()"))
        -- a read calling it runs on the readers (the classifier knows it too)
        local before = reads_on_readers(conn)
        -- long enough (some ms each) that they spread over the readers
        local seen = support.counts_everywhere(conn, [[SELECT ext_twice(count(*)) FROM (WITH
            RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
            SELECT x FROM c)]], 24)
        assert.are.same({ [200000] = 24 }, seen)
        assert.is_true(reads_on_readers(conn) >= before + 24, "the reads ran on the readers")
        local everyone = 0
        for _, r in ipairs(conn:stats().readers) do
            everyone = everyone + (r.executed > 0 and 1 or 0)
        end
        assert.is_true(everyone >= 2, "more than one reader ran it")
        -- and on the writer: in a write, and inside a transaction
        conn:execute("CREATE TABLE t(x)")
        conn:execute("INSERT INTO t VALUES (ext_twice(5))")
        conn:transaction(function()
            conn:execute("INSERT INTO t SELECT ext_twice(x) FROM t")
            assert.are.equal("hello", support.scalar(conn, "SELECT hello()"))
        end)
        assert.are.same({ 10, 20 }, support.column(conn, "SELECT x FROM t ORDER BY x"))
        conn:close()
        cleanup()
    end)

    it("takes {path, entry_point}", function()
        local conn = sqlite.connect(":memory:", { extensions = { { EXT, "sqlite3_exthello_alt" } } })
        assert.are.equal("hello", support.scalar(conn, "SELECT hello_alt()"))
        local err = support.raises("OperationalError", support.scalar, conn, "SELECT hello()")
        assert.matches("no such function", err.message)
        conn:close()
    end)

    it("keeps SQL's load_extension() refused", function()
        local conn = sqlite.connect(":memory:", { extensions = { EXT } })
        local err = support.raises("OperationalError", support.scalar, conn,
                                   "SELECT load_extension(?)", EXT)
        assert.matches("not authorized", err.message)
        conn:close()
    end)

    it("fails connect with the path and SQLite's message, leaving nothing behind", function()
        local before = support.holdings()
        for _ = 1, 3 do
            local err = support.raises("OperationalError", sqlite.connect, ":memory:",
                                       { extensions = { EXT, "/nonexistent/libnothing.so" } })
            assert.matches("cannot load extension '/nonexistent/libnothing.so'", err.message, 1, true)
            assert.matches("libnothing.so", err.message)
            err = support.raises("OperationalError", sqlite.connect, ":memory:",
                                 { extensions = { { EXT, "no_such_entry_point" } } })
            assert.matches("no_such_entry_point", err.message)
        end
        support.assert_nothing_left(before)
    end)

    it("refuses a malformed option before anything opens", function()
        for _, bad in ipairs({ "x.so", { 1 }, { "" }, { { EXT, 3 } }, { x = EXT } }) do
            support.raises("ProgrammingError", sqlite.connect, ":memory:", { extensions = bad })
        end
    end)

    it("works in blocking calls, in the scheduler and under luv", function()
        local conn = sqlite.connect(":memory:", { extensions = { EXT } })
        assert.are.equal(6, support.scalar(conn, "SELECT ext_twice(3)"))
        sqlite.run(function()
            local hs = {}
            for i = 1, 8 do
                hs[i] = sqlite.spawn(function()
                    return support.scalar(conn, "SELECT ext_twice(?)", i)
                end)
            end
            for i = 1, 8 do
                assert.are.equal(2 * i, hs[i]:join())
            end
        end)
        local ok, uv = pcall(require, "luv")
        if ok then
            local before = sqlite.set_host(nil)
            require "pasyn_sqlite.luv"
            local got
            local co = coroutine.create(function()
                got = support.scalar(conn, "SELECT ext_twice(50)")
            end)
            assert(coroutine.resume(co))
            uv.run()
            sqlite.set_host(before)
            assert.are.equal(100, got)
        end
        conn:close()
    end)
end)
