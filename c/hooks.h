/*
 * hooks.h - what the host's trace and on_change hooks are told (hooks.c): collected on the
 * worker threads in C memory, attached to the task that ran the statements (or committed the
 * changes), and read by the host once the task has completed. No host code runs here.
 */
#ifndef PASYN_HOOKS_H
#define PASYN_HOOKS_H

#include "pool.h"

/* The writer's on_change log. Writer thread. */
/* Follows the pool's on_change bound: switches the log on or off when no transaction is open
 * (a log switched on midway would have missed the transaction's start). Before each task,
 * and before a group commit's BEGIN, whose members' tasks start inside its transaction. */
void hooks_follow(pasyn_pool *pool);
/* Before each task: hooks_follow, and marks where the task's changes begin. */
void hooks_task_start(pasyn_pool *pool, pasyn_task *t);
/* After each task: changes a COMMIT made durable go to the task; inside a transaction, the
 * task's own changes are marked as its (a group commit hands them to it after the COMMIT). */
void hooks_task_done(pasyn_pool *pool, pasyn_task *t);
/* Around one statement of a task on the writer: a statement that failed while its
 * transaction goes on undid its changes (unless it kept some, as OR FAIL does: changes() is
 * not 0 then), and a savepoint statement that succeeded moves the log's savepoint marks. */
void hooks_stmt_start(conn *c);
void hooks_stmt_end(conn *c, pasyn_task *t, int rc, int savepoint, const char *name);
/* Drops what the log holds since hooks_stmt_start (an executemany rolled back to its
 * savepoint). */
void hooks_stmt_undo(conn *c);
/* The on_change bound (max_events) holds for each autocommit statement, as if it ran alone,
 * also in a group commit, whose members share one transaction and one log: a member must not
 * lose changes to the rows of the members before it. hooks_batch_full: the log holds as many
 * as the bound (or dropped some), so that the next member would lose all of its: the batch
 * ends before it. hooks_batch_overflowed: the member that just ran, not the batch's first
 * one, had changes dropped: the batch is rolled back and its statements run again alone. */
int hooks_batch_full(pasyn_pool *pool);
int hooks_batch_overflowed(pasyn_pool *pool);
/* After a group commit's COMMIT: when it succeeded (`committed`), each member gets the
 * changes it made; either way the log is emptied (a batch that failed runs again, each
 * statement alone, reporting its own changes). */
void hooks_batch_end(pasyn_pool *pool, pasyn_task **batch, int n, int committed);
/* Frees the writer's log (at close). */
void hooks_close(conn *c);

#endif
