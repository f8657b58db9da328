-- The files behind ":memory:" pools (a private WAL database on tmpfs, pasyn-memdb-XXXXXX and
-- its -wal and -shm) never outlive their process: close removes them, exit() removes them
-- (os.exit without closing the Lua state runs no finalizer), and the next ":memory:" open, in
-- any process, removes those of a process that died (SIGKILL) — never those of a live one.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local exists = support.exists

local NO_CHILDREN = "a child process cannot start under the preloaded ThreadSanitizer runtime"

-- The files of the set of `file` (the main file and its companions) that exist now.
local function set_left(file)
    local left = {}
    for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do
        if exists(file .. suffix) then
            left[#left + 1] = file .. suffix
        end
    end
    return left
end

-- A child interpreter that opens a ":memory:" pool, writes, prints "memfile <pid> <file>",
-- and then, by `ending`: "exit" calls os.exit(0) with the pool open; "wait" waits (at most
-- 30 s) for the file `stop` to appear, then closes the pool and returns. The child finds the
-- module as this process does (LUA_PATH, LUA_CPATH); exec makes it the process whose pid
-- io.popen's shell had. Returns the open pipe, the child's pid and its memory file.
local function child(ending, stop)
    local script = [[
        local sqlite = require "pasyn_sqlite"
        local f = io.open("/proc/self/stat")
        local pid = f:read("*n")
        f:close()
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE t (x)")
        conn:execute("INSERT INTO t VALUES (1)")
        local file = conn:execute("SELECT file FROM pragma_database_list WHERE name = 'main'")
                         :fetchone()[1]
        io.write("memfile ", pid, " ", file, "\n")
        io.flush()
        if ENDING == "exit" then
            os.exit(0)
        end
        local deadline = os.time() + 30
        while os.time() < deadline and not io.open(STOP) do
            sqlite.sleep(0.02)
        end
        conn:close()
    ]]
    script = script:gsub("ENDING", string.format("%q", ending)):gsub("STOP", string.format("%q", stop or ""))
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    -- ASAN_OPTIONS: under make asan the child inherits the preloaded runtime, whose leak check
    -- at exit would report the pool os.exit leaves open.
    local p = assert(io.popen("ASAN_OPTIONS=detect_leaks=0 exec " .. support.lua .. " " .. path
                              .. " 2>&1"))
    local out = {}
    for line in p:lines() do
        out[#out + 1] = line
        local pid, file = line:match("^memfile (%d+) (%S+)$")
        if pid then
            os.remove(path)
            return p, tonumber(pid), file
        end
    end
    p:close()
    os.remove(path)
    error("the child printed no memory file:\n" .. table.concat(out, "\n"))
end

describe(":memory: files", function()
    it("a pool's files are gone once it is closed", function()
        local conn = sqlite.connect(":memory:")
        conn:execute("CREATE TABLE t (x)")
        conn:execute("INSERT INTO t VALUES (1)")
        local file = support.memory_file(conn)
        assert.is_true(exists(file))
        conn:close()
        assert.same({}, set_left(file))
    end)

    describe("of another process", function()
        it("are gone when it ends by os.exit(0) without closing its pool", function()
            if support.no_children then
                return pending(NO_CHILDREN)
            end
            local p, _, file = child("exit")
            p:read("*a")
            p:close()
            assert.same({}, set_left(file)) -- removed at exit
            local conn = sqlite.connect(":memory:")
            assert.same({}, set_left(file))
            conn:close()
        end)

        it("are removed by the next :memory: open once it was killed (SIGKILL)", function()
            if support.no_children then
                return pending(NO_CHILDREN)
            end
            local p, pid, file = child("wait", "/nonexistent/never")
            assert.is_true(exists(file))
            os.execute("kill -KILL " .. pid)
            p:read("*a")
            p:close()
            -- SIGKILL runs nothing of the child: its files are still there
            assert.is_true(#set_left(file) >= 2, "expected the killed child's files to be left")
            local conn = sqlite.connect(":memory:")
            assert.same({}, set_left(file))
            conn:execute("CREATE TABLE t (x)") -- the new pool works
            assert.is_false(exists(file))
            conn:close()
        end)

        it("are kept while it lives, and removed by its close", function()
            if support.no_children then
                return pending(NO_CHILDREN)
            end
            local stop = support.temp_path()
            local p, pid, file = child("wait", stop)
            local ok, err = pcall(function()
                local before = set_left(file)
                assert.is_true(#before >= 2, "the child's files: " .. table.concat(before, " "))
                for _ = 1, 3 do
                    local conn = sqlite.connect(":memory:") -- sweeps: the child's files stay
                    conn:close()
                    assert.same(before, set_left(file))
                end
            end)
            local f = assert(io.open(stop, "w"))
            f:close()
            local out = p:read("*a")
            p:close()
            os.remove(stop)
            if not ok then
                os.execute("kill -KILL " .. pid .. " 2>/dev/null")
                error(err, 0)
            end
            assert.same({}, set_left(file), out)
        end)
    end)

    it("a leftover main file alone (a process that died before locking it) is removed", function()
        local conn = sqlite.connect(":memory:")
        local dir = support.memory_file(conn):match("^(.*)/")
        conn:close()
        local stale = dir .. "/pasyn-memdb-zzSTAL"
        local f = assert(io.open(stale, "w"))
        f:close()
        conn = sqlite.connect(":memory:")
        assert.is_false(exists(stale))
        conn:close()
    end)

    it("a leftover -wal or -shm whose main file is gone (a removal cut short) is removed", function()
        local conn = sqlite.connect(":memory:")
        local dir = support.memory_file(conn):match("^(.*)/")
        conn:close()
        local orphans = { dir .. "/pasyn-memdb-zzORPH-wal", dir .. "/pasyn-memdb-zzORPH-shm" }
        for _, name in ipairs(orphans) do
            local f = assert(io.open(name, "w"))
            f:write("x")
            f:close()
        end
        conn = sqlite.connect(":memory:")
        assert.same({}, set_left(dir .. "/pasyn-memdb-zzORPH"))
        conn:close()
    end)

    it("a file of another name there is left alone", function()
        local conn = sqlite.connect(":memory:")
        local dir = support.memory_file(conn):match("^(.*)/")
        conn:close()
        local others = { dir .. "/pasyn-memdb-zzOTHER-x", dir .. "/pasyn-memory-zzOLDV" }
        for _, name in ipairs(others) do
            local f = assert(io.open(name, "w"))
            f:close()
        end
        conn = sqlite.connect(":memory:")
        conn:close()
        for _, name in ipairs(others) do
            assert.is_true(exists(name), name)
            os.remove(name)
        end
    end)
end)
