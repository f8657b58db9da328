-- What memory a pool keeps, measured in this process (run each measurement in a fresh one):
--
--   lua5.4 bench/memory.lua caches                      200 distinct 1 MB INSERT texts, then 200
--                                                       distinct 1 MB SELECT texts: RSS after each
--   lua5.4 bench/memory.lua pending insert|select [max] 100,000 coroutines of one statement each
--                                                       (max_pending = max, default the library's):
--                                                       peak RSS (VmHWM)
--   lua5.4 bench/memory.lua pending sleep               the same coroutines parked in a timer instead
--
-- from the top of the tree, after make, with LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;"
-- (or build/luajit and luajit). Database files go to os.tmpname() and are removed.
local sqlite = require "pasyn_sqlite"

local function mib(field)
    for line in io.lines("/proc/self/status") do
        local v = line:match("^" .. field .. ":%s+(%d+)")
        if v then
            return tonumber(v) / 1024
        end
    end
end

local function remove(path)
    for _, suffix in ipairs({ "", "-wal", "-shm" }) do
        os.remove(path .. suffix)
    end
end

local function caches()
    local path = os.tmpname()
    local conn = sqlite.connect(path)
    conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    local base = mib("VmRSS")
    local pad = string.rep("a", 1024 * 1024)
    for i = 1, 200 do
        conn:execute("INSERT INTO t (id, x) VALUES (" .. i .. ", '" .. pad .. "')")
    end
    collectgarbage()
    collectgarbage()
    print(string.format("after 200 INSERTs of 1 MB: RSS %.1f MiB (%+.1f)", mib("VmRSS"), mib("VmRSS") - base))
    for i = 1, 200 do
        local row = conn:execute("SELECT " .. i .. ", length('" .. pad .. "')"):fetchone()
        assert(row[1] == i and row[2] == #pad)
    end
    collectgarbage()
    collectgarbage()
    print(string.format("after 200 SELECTs of 1 MB: RSS %.1f MiB (%+.1f), peak %.1f MiB", mib("VmRSS"),
                        mib("VmRSS") - base, mib("VmHWM")))
    conn:close()
    remove(path)
end

local function pending(mode, max)
    local path = os.tmpname()
    local conn = sqlite.connect(path, max and { max_pending = math.tointeger and math.tointeger(max) or max })
    conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    conn:execute("INSERT INTO t (id, v) VALUES (1, 1)")
    collectgarbage()
    collectgarbage()
    local base, n, done = mib("VmRSS"), 100000, 0
    sqlite.run(function()
        for i = 1, n do
            sqlite.spawn(function()
                if mode == "insert" then
                    conn:execute("INSERT INTO t (v) VALUES (?)", i)
                elseif mode == "select" then
                    assert(conn:execute("SELECT v FROM t WHERE id = ?", 1):fetchone()[1] == 1)
                else
                    sqlite.sleep(0.5)
                end
                done = done + 1
            end)
        end
    end)
    assert(done == n)
    print(string.format("%d coroutines, %s, max_pending = %s: RSS before %.1f MiB, peak %.1f MiB (%+.1f)", n,
                        mode, max or "default", base, mib("VmHWM"), mib("VmHWM") - base))
    conn:close()
    remove(path)
end

if arg[1] == "caches" then
    caches()
elseif arg[1] == "pending" and (arg[2] == "insert" or arg[2] == "select" or arg[2] == "sleep") then
    pending(arg[2], tonumber(arg[3]))
else
    io.stderr:write("usage: bench/memory.lua caches | pending insert|select|sleep [max_pending]\n")
    os.exit(2)
end
