/*
 * deque.c - the double-ended task queue behind each reader: a growable ring guarded by a
 * mutex. The owner pops from the front, thieves pop from the back; `size` mirrors the length
 * so a thief can pick the busiest deque without taking every lock.
 */
#include <stdlib.h>
#include "internal.h"

int deque_init(deque *d)
{
    d->ring = NULL;
    d->head = d->len = d->cap = 0;
    atomic_init(&d->size, 0);
    return pthread_mutex_init(&d->mu, NULL) == 0 ? 0 : PASYN_ENOMEM;
}

void deque_destroy(deque *d)
{
    free(d->ring);
    d->ring = NULL;
    pthread_mutex_destroy(&d->mu);
}

static int deque_grow(deque *d)
{
    size_t cap = d->cap ? d->cap * 2 : 16;
    pasyn_task **ring = malloc(cap * sizeof *ring);
    if (!ring)
        return PASYN_ENOMEM;
    for (size_t i = 0; i < d->len; i++)
        ring[i] = d->ring[(d->head + i) % d->cap];
    free(d->ring);
    d->ring = ring;
    d->head = 0;
    d->cap = cap;
    return 0;
}

int deque_push_back_locked(deque *d, pasyn_task *t)
{
    if (d->len == d->cap && deque_grow(d) != 0)
        return PASYN_ENOMEM;
    d->ring[(d->head + d->len) % d->cap] = t;
    d->len++;
    atomic_store(&d->size, d->len); /* seq_cst: parking readers rely on it */
    return 0;
}

pasyn_task *deque_pop_front_locked(deque *d)
{
    if (d->len == 0)
        return NULL;
    pasyn_task *t = d->ring[d->head];
    d->head = (d->head + 1) % d->cap;
    d->len--;
    atomic_store(&d->size, d->len); /* seq_cst: parking readers rely on it */
    return t;
}

static pasyn_task *deque_pop_back_locked(deque *d)
{
    if (d->len == 0)
        return NULL;
    d->len--;
    atomic_store(&d->size, d->len); /* seq_cst: parking readers rely on it */
    return d->ring[(d->head + d->len) % d->cap];
}

pasyn_task *deque_take_short(deque *d, size_t *at)
{
    if (atomic_load_explicit(&d->size, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&d->mu);
    pasyn_task *t = NULL;
    for (size_t i = 0; i < d->len && !t; i++) {
        if (d->ring[(d->head + i) % d->cap]->long_read)
            continue;
        t = d->ring[(d->head + i) % d->cap];
        *at = i;
        for (size_t j = i; j + 1 < d->len; j++) /* close the gap */
            d->ring[(d->head + j) % d->cap] = d->ring[(d->head + j + 1) % d->cap];
        d->len--;
        atomic_store(&d->size, d->len);
    }
    pthread_mutex_unlock(&d->mu);
    return t;
}

int deque_push_back(deque *d, pasyn_task *t)
{
    pthread_mutex_lock(&d->mu);
    int rc = deque_push_back_locked(d, t);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

pasyn_task *deque_pop_front(deque *d)
{
    if (atomic_load_explicit(&d->size, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&d->mu);
    pasyn_task *t = deque_pop_front_locked(d);
    pthread_mutex_unlock(&d->mu);
    return t;
}

pasyn_task *deque_pop_back(deque *d)
{
    if (atomic_load_explicit(&d->size, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&d->mu);
    pasyn_task *t = deque_pop_back_locked(d);
    pthread_mutex_unlock(&d->mu);
    return t;
}
