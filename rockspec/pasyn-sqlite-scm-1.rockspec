rockspec_format = "3.0"
package = "pasyn-sqlite"
version = "scm-1"
source = {
   url = "git+https://example.invalid/pasyn-sqlite.git",
}
description = {
   summary = "Async SQLite for Lua: one writer thread, work-stealing reader threads",
   detailed = [[
Queries from coroutines yield and resume when the native completion arrives; outside a
scheduler calls simply block. A C core runs one writer thread and N reader threads on a WAL
database. The API mirrors Python's sqlite3.
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.1",
}
external_dependencies = {
   SQLITE = { header = "sqlite3.h", library = "sqlite3" },
}
build = {
   type = "builtin",
   modules = {
      ["pasyn_sqlite"] = "lua/pasyn_sqlite.lua",
      ["pasyn_sqlite.errors"] = "lua/pasyn_sqlite/errors.lua",
      ["pasyn_sqlite.scheduler"] = "lua/pasyn_sqlite/scheduler.lua",
      ["pasyn_sqlite.ngx"] = "lua/pasyn_sqlite/ngx.lua",
      ["pasyn_sqlite.luv"] = "lua/pasyn_sqlite/luv.lua",
      ["pasyn_sqlite.cqueues"] = "lua/pasyn_sqlite/cqueues.lua",
      ["pasyn_sqlite.core"] = {
         sources = {
            "lua/pasyn_sqlite/core.c",
            "c/deque.c", "c/hub.c", "c/task.c", "c/conn.c", "c/uri.c", "c/worker.c", "c/pool.c",
         },
         defines = { "_GNU_SOURCE" },
         incdirs = { "c", "$(SQLITE_INCDIR)" },
         libdirs = { "$(SQLITE_LIBDIR)" },
         libraries = { "sqlite3", "pthread" },
      },
   },
}
