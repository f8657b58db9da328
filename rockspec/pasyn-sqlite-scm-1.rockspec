rockspec_format = "3.0"
package = "pasyn-sqlite"
version = "scm-1"
source = {
   url = "git+https://github.com/pasyn-sqlite/pasyn-sqlite.git",
}
description = {
   summary = "Async SQLite for Lua: one writer thread, work-stealing reader threads",
   detailed = [[
Queries from coroutines yield and resume when the native completion arrives; outside a
scheduler calls simply block. A C core runs one writer thread and N reader threads on a WAL
database. The API mirrors Python's sqlite3.
]],
   homepage = "https://github.com/pasyn-sqlite/pasyn-sqlite",
   license = "MIT",
}
dependencies = {
   "lua >= 5.1",
}
external_dependencies = {
   SQLITE = { header = "sqlite3.h", library = "sqlite3" },
}
build = {
   -- The Makefile builds the module (pasyn_sqlite/core.so, from the C core c/*.c and the binding)
   -- under build/, and its install-lua target copies it and the Lua files into the rock.
   type = "make",
   variables = {
      LUA = "$(LUA)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      CC = "$(CC)",
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      SQLITE_CFLAGS = "-I$(SQLITE_INCDIR)",
      SQLITE_LIBS = "-L$(SQLITE_LIBDIR) -lsqlite3",
   },
   build_target = "all",
   install_target = "install-lua",
   install_variables = {
      -- where the Makefile puts the C module and the Lua files (not luarocks' LUA_LIBDIR)
      LUA_LIBDIR = "$(LIBDIR)",
      LUA_SHAREDIR = "$(LUADIR)",
   },
}
