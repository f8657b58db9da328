-- Loading the module as installed: a C module built for another Lua fails to load with a message
-- that names the Lua it was built for, the running one and the make command that rebuilds it,
-- not only the dynamic linker's "undefined symbol: lua_..."; other failures to load pass through
-- unchanged. Each load runs in a child process of the interpreter under test, from the top of the
-- tree (without the sanitizer runtime that make asan preloads); the other Lua's build
-- (build/lua5.3, or build/lua5.4 under 5.3 and LuaJIT) is made first.
local core = require "pasyn_sqlite.core"

local this = jit and "LuaJIT" or _VERSION -- luacheck: ignore jit
local version = jit and "luajit" or _VERSION:match("%d+%.%d+")
local interpreter = version == "luajit" and "luajit" or "lua" .. version
local other = version == "5.4" and "5.3" or "5.4"

-- Under make tsan the shell that os.execute and io.popen start inherits the preloaded
-- ThreadSanitizer runtime, with which /bin/sh crashes before it can drop it: the checks that
-- need a child run in make test and make asan.
local no_children = (os.getenv("LD_PRELOAD") or ""):find("tsan", 1, true)

local function sh(cmd)
    local r = os.execute("env -u LD_PRELOAD " .. cmd)
    return r == true or r == 0
end

-- Output and exit status of `require "pasyn_sqlite"` in a child interpreter that finds the C
-- module only through `cpath`.
local function require_in_child(cpath)
    local p = assert(io.popen(string.format([[env -u LD_PRELOAD LUA_PATH='lua/?.lua' LUA_CPATH='%s' ]]
        .. [[%s -e 'require "pasyn_sqlite"' 2>&1; echo "exit $?"]], cpath, interpreter)))
    local out = p:read("*a")
    p:close()
    return out, tonumber(out:match("exit (%d+)%s*$"))
end

describe("loading the C module", function()
    it("says which Lua it was built for", function()
        assert.are.equal(this, core.built_for)
    end)

    it("built for another Lua, fails with both Luas and the make command that rebuilds it", function()
        if no_children then
            pending("no child process under the preloaded ThreadSanitizer runtime")
            return
        end
        assert.is_true(sh("make -s LUA_VERSION=" .. other .. " >/dev/null"), "make LUA_VERSION=" .. other)
        local path = "build/lua" .. other .. "/pasyn_sqlite/core.so"
        local out, status = require_in_child("build/lua" .. other .. "/?.so")
        assert.are_not.equal(0, status, out)
        local expected = string.format("pasyn_sqlite: the C module %s was built for Lua %s, this is %s:"
            .. " rebuild it with make LUA_VERSION=%s", path, other, this, version)
        assert.is_truthy(out:find(expected, 1, true), out)
        assert.is_truthy(out:find("undefined symbol: lua", 1, true), out) -- the linker's words too
    end)

    it("not found, fails with Lua's own message", function()
        if no_children then
            pending("no child process under the preloaded ThreadSanitizer runtime")
            return
        end
        local out, status = require_in_child("/nonexistent/?.so")
        assert.are_not.equal(0, status, out)
        assert.is_truthy(out:find("module 'pasyn_sqlite.core' not found", 1, true), out)
        assert.is_falsy(out:find("was built for", 1, true), out)
    end)
end)
