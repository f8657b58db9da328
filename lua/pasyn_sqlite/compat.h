/*
 * compat.h - the few Lua C API differences between 5.1/LuaJIT, 5.3 and 5.4 that the binding
 * meets, bridged once here.
 */
#ifndef PASYN_COMPAT_H
#define PASYN_COMPAT_H

#include <math.h>
#include <stdint.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

/* Whether the running coroutine may yield from where it called us (no C call, such as a
 * require or a table.sort comparator, in between): lua_isyieldable, in Lua 5.3+ and LuaJIT
 * 2.1 (whose lualib.h names LUA_JITLIBNAME); PUC 5.1 cannot tell, and says yes. */
#if LUA_VERSION_NUM >= 503 || defined(LUA_JITLIBNAME)
#define compat_isyieldable(L) lua_isyieldable(L)
#else
#define compat_isyieldable(L) 1
#endif

#if LUA_VERSION_NUM < 502
#define compat_rawlen(L, i) lua_objlen(L, (i))
/* luaL_setfuncs: the functions of l into the table below the nup upvalues on top (popped). */
static void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    for (; l->name; l++) {
        for (int i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
/* Anchors the value on top of the stack to the userdata at ud (pops it). */
static void compat_anchor(lua_State *L, int ud)
{
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, ud);
}
#else
#define compat_rawlen(L, i) lua_rawlen(L, (i))
#define compat_setfuncs(L, l, nup) luaL_setfuncs(L, (l), (nup))
static void compat_anchor(lua_State *L, int ud)
{
    lua_setuservalue(L, ud);
}
#endif

/* lua_rawgeti and lua_rawget, giving the type of the value they push (as 5.3+ return it). */
#if LUA_VERSION_NUM >= 503
#define compat_rawgeti(L, i, k) lua_rawgeti(L, (i), (k))
#define compat_rawget(L, i) lua_rawget(L, (i))
#else
#define compat_rawgeti(L, i, k) (lua_rawgeti(L, (i), (k)), lua_type(L, -1))
#define compat_rawget(L, i) (lua_rawget(L, (i)), lua_type(L, -1))
#endif

#if LUA_VERSION_NUM >= 503
#define compat_pushint64(L, v) lua_pushinteger(L, (lua_Integer)(v))
/* 1 and *out when the number at i is an integer subtype. */
static int compat_tointeger(lua_State *L, int i, int64_t *out)
{
    if (!lua_isinteger(L, i))
        return 0;
    *out = (int64_t)lua_tointeger(L, i);
    return 1;
}
#else
/* Integers beyond +-2^53 may not fit a double: the binding pushes those as the pool's
 * `integers` option says (core.c, push_int). */
#define COMPAT_DOUBLES 1
/* LuaJIT's lua_type for cdata, which its lua.h does not name. */
#define COMPAT_TCDATA 10
#define compat_pushint64(L, v) lua_pushnumber(L, (lua_Number)(v))
/* Numbers are doubles: an integral one in int64's range binds as an integer. */
static int compat_tointeger(lua_State *L, int i, int64_t *out)
{
    lua_Number d = lua_tonumber(L, i);
    if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return 0;
    *out = (int64_t)d;
    return 1;
}
#endif

#endif
