-- Random calls over the whole Lua API from many coroutines (spec/proofs/fuzz_api.lua; make
-- fuzz runs it longer under the ASan build): no crash, no hang, every error an error object
-- of a known kind, and a whole file at the end. PASYN_FUZZ_SEED replays a run; a failure
-- names its seed and call.
local fuzz = require "proofs.fuzz_api"

local SECONDS = 6

describe("random calls over the API from many coroutines", function()
    it("raise only error objects with a kind, never hang, and leave a whole file", function()
        local seed = tonumber(os.getenv("PASYN_FUZZ_SEED")) or os.time()
        -- (calls with a wrong self, conn.execute(cursor, ...), among them)
        local ok, result = fuzz.run({ seed = seed, seconds = SECONDS })
        if not ok then -- on stderr too: prove shows it, where it hides a TAP diagnostic
            io.stderr:write("fuzz_api (PASYN_FUZZ_SEED=", seed, "): ", tostring(result), "\n")
        end
        assert(ok, "fuzz_api (PASYN_FUZZ_SEED=" .. seed .. "): " .. tostring(result))
        -- It did call: statements ran and failed in the ways the API reports.
        local seen = {}
        for kind, n in pairs(result.errors) do
            seen[#seen + 1] = kind .. " " .. n
        end
        table.sort(seen)
        local what = ("%d calls, errors: %s (seed %d)"):format(result.calls,
                                                           table.concat(seen, ", "), seed)
        if result.calls <= 100 or not result.errors.ProgrammingError
           or not result.errors.OperationalError then
            io.stderr:write("fuzz_api: ", what, "\n")
        end
        assert.is_true(result.calls > 100, what)
        assert.is_truthy(result.errors.ProgrammingError, what)
        assert.is_truthy(result.errors.OperationalError, what)
    end)
end)

-- What the fuzzer found, pinned.
describe("a connection closed by another coroutine", function()
    local sqlite = require "pasyn_sqlite"
    local support = require "support"

    it("fails an executemany whose iterator was running with ConnectionClosedError", function()
        local path, cleanup = support.tmpdb()
        local err
        sqlite.run(function()
            local conn = sqlite.connect(path)
            conn:execute("CREATE TABLE t (x)")
            sqlite.spawn(function()
                sqlite.sleep(0.01)
                conn:close()
            end)
            local i = 0
            local ok
            ok, err = pcall(conn.executemany, conn, "INSERT INTO t VALUES (?)", function()
                i = i + 1
                if i == 1 then
                    repeat -- the connection closes meanwhile (however long that takes)
                        sqlite.sleep(0.01)
                    until conn.closed
                end
                if i <= 3 then
                    return { i }
                end
            end)
            assert.is_false(ok)
        end)
        cleanup()
        assert.is_true(sqlite.is_error(err), "not an error object: " .. tostring(err))
        assert.are.equal("ConnectionClosedError", err.kind)
    end)
end)
