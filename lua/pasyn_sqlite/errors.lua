-- pasyn_sqlite.errors: the error objects every failure raises, their kinds and ancestry, and
-- the mapping from SQLite's result codes to kinds (as Python's sqlite3 maps them).

local M = {}

local parents = {
    Error = false,
    InterfaceError = "Error",
    DatabaseError = "Error",
    DataError = "DatabaseError",
    OperationalError = "DatabaseError",
    IntegrityError = "DatabaseError",
    InternalError = "DatabaseError",
    ProgrammingError = "DatabaseError",
    NotSupportedError = "DatabaseError",
    PoolError = "Error",
    PoolClosedError = "PoolError",
    ConnectionClosedError = "PoolError",
}
M.kinds = parents

local Error = {}
Error.__index = Error

function Error:__tostring()
    return self.kind .. ": " .. tostring(self.message)
end

-- True when the error is of `kind` or of a kind descending from it.
function Error:is(kind)
    local k = self.kind
    while k do
        if k == kind then
            return true
        end
        k = parents[k]
    end
    return false
end

function M.new(kind, message, sql, code, extended_code)
    return setmetatable({
        kind = kind,
        message = message,
        sql = sql,
        code = code,
        extended_code = extended_code,
    }, Error)
end

function M.is_error(v)
    return getmetatable(v) == Error
end

-- SQLite primary result code -> kind.
local by_code = {
    [1] = "OperationalError",   -- ERROR
    [2] = "InternalError",      -- INTERNAL
    [3] = "OperationalError",   -- PERM
    [4] = "OperationalError",   -- ABORT
    [5] = "OperationalError",   -- BUSY
    [6] = "OperationalError",   -- LOCKED
    [7] = "OperationalError",   -- NOMEM
    [8] = "OperationalError",   -- READONLY
    [9] = "OperationalError",   -- INTERRUPT
    [10] = "OperationalError",  -- IOERR
    [11] = "DatabaseError",     -- CORRUPT
    [12] = "InternalError",     -- NOTFOUND
    [13] = "OperationalError",  -- FULL
    [14] = "OperationalError",  -- CANTOPEN
    [15] = "OperationalError",  -- PROTOCOL
    [16] = "OperationalError",  -- EMPTY
    [17] = "OperationalError",  -- SCHEMA
    [18] = "DataError",         -- TOOBIG
    [19] = "IntegrityError",    -- CONSTRAINT
    [20] = "IntegrityError",    -- MISMATCH
    [21] = "InterfaceError",    -- MISUSE
    [22] = "OperationalError",  -- NOLFS
    [23] = "DatabaseError",     -- AUTH
    [25] = "InterfaceError",    -- RANGE
    [26] = "DatabaseError",     -- NOTADB
}

-- The kinds for the core's own error classes (see core.result).
local by_class = {
    programming = "ProgrammingError",
    closed = "PoolClosedError",
    nomem = "OperationalError",
}

-- An error object from what core.result reported for a failed task.
function M.from_result(class, code, extended, message, sql)
    if class == "sqlite" then
        return M.new(by_code[code] or "DatabaseError", message, sql, code, extended)
    end
    return M.new(by_class[class] or "InternalError", message, sql)
end

return M
