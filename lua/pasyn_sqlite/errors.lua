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

-- Out of memory is one kind wherever it is noticed: SQLite's SQLITE_NOMEM (class "sqlite",
-- code 7), and class "nomem" (an allocation of the core, of the binding while it converts
-- parameters, or threads that would not start). Python's sqlite3 raises MemoryError for
-- SQLITE_NOMEM, which is no kind of ours; of the kinds we have (API.md, "Errors"), PEP 249
-- names "a memory allocation error occurred during processing" among OperationalError's
-- causes, and that is what SQLite's code 7 maps to above. Each carries code and
-- extended_code 7, so `err.code == 7` tells out of memory from the rest of its kind.
local SQLITE_NOMEM = 7

-- The kinds for the core's other error classes (see core.result).
local by_class = {
    programming = "ProgrammingError",
    closing = "PoolClosedError", -- the connection is closing
    closed = "ConnectionClosedError", -- it is closed
}

-- The error object for a failure the core reported, at submit or at completion (core.result):
-- its class ("sqlite", "programming", "closing", "closed", "nomem"), SQLite's primary and extended codes
-- (for "sqlite"; else 0), the message, and the statement. Only here do classes and codes
-- become kinds.
function M.from_core(class, code, extended, message, sql)
    if class == "sqlite" then
        return M.new(by_code[code] or "DatabaseError", message, sql, code, extended)
    elseif class == "nomem" then
        return M.new(by_code[SQLITE_NOMEM], message, sql, SQLITE_NOMEM, SQLITE_NOMEM)
    end
    return M.new(by_class[class] or "InternalError", message, sql)
end

return M
