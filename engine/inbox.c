/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Requests, tickets and the shard inbox (inbox.h). An append becomes one
 * request per shard it touches, all sharing one ticket; the ticket's
 * callback fires once, when its last part completes.
 */
#include "inbox.h"

/* One part of a ticket finished with `rc` (0 or an error). */
static void ticket_part_done(struct ticket *t, int rc)
{
    int expected = 0;
    /* Read before the decrement: once another part's decrement takes the
     * count to 0, that thread frees t. */
    unsigned parts = t->parts, prev;

    if (rc)
        atomic_compare_exchange_strong(&t->err, &expected, rc);
    prev = atomic_fetch_sub(&t->pending, 1);
    TIDE_ASSERT(prev > 0 && prev <= parts); /* never underflows */
    if (prev != 1)
        return;
    rc = atomic_load(&t->err);
    if (t->on_done)
        t->on_done(t, rc);
    t->cb(t->ctx, rc);
    tide_free(t);
}

void tide__inbox_done(struct req *r, int rc)
{
    ticket_part_done(r->ticket, rc);
    tide_free(r);
}

void tide__inbox_complete(struct req *list, int rc)
{
    while (list) {
        struct req *next = list->next;

        tide__inbox_done(list, rc);
        list = next;
    }
}

void tide__inbox_init(struct inbox *in)
{
    atomic_init(&in->stack, NULL);
    atomic_init(&in->depth, 0);
    atomic_init(&in->sleeping, 0);
    pthread_mutex_init(&in->wake_mu, NULL);
    pthread_cond_init(&in->wake_cv, NULL);
}

void tide__inbox_fini(struct inbox *in)
{
    tide__inbox_complete(atomic_exchange(&in->stack, NULL), TIDE_ECLOSED);
    pthread_mutex_destroy(&in->wake_mu);
    pthread_cond_destroy(&in->wake_cv);
}

void tide__inbox_push(struct inbox *in, struct req *r)
{
    struct req *head = atomic_load(&in->stack);

    do
        r->next = head;
    while (!atomic_compare_exchange_weak(&in->stack, &head, r));
    atomic_fetch_add(&in->depth, 1);
    if (atomic_load(&in->sleeping)) {
        pthread_mutex_lock(&in->wake_mu);
        pthread_cond_signal(&in->wake_cv);
        pthread_mutex_unlock(&in->wake_mu);
    }
}

struct req *tide__inbox_take(struct inbox *in, const int *stopping)
{
    struct req *list = atomic_exchange(&in->stack, NULL), *fifo = NULL;

    if (!list) {
        atomic_store(&in->sleeping, 1);
        pthread_mutex_lock(&in->wake_mu);
        while (!(list = atomic_exchange(&in->stack, NULL)) && !*stopping)
            pthread_cond_wait(&in->wake_cv, &in->wake_mu);
        pthread_mutex_unlock(&in->wake_mu);
        atomic_store(&in->sleeping, 0);
    }
    while (list) {
        struct req *next = list->next;

        list->next = fifo;
        fifo = list;
        list = next;
        /* depth may dip below zero for a moment: a push counts itself
         * after its exchange, so it is a gauge, not an invariant. */
        atomic_fetch_sub(&in->depth, 1);
    }
    return fifo;
}

void tide__inbox_wake(struct inbox *in)
{
    pthread_mutex_lock(&in->wake_mu);
    pthread_cond_signal(&in->wake_cv);
    pthread_mutex_unlock(&in->wake_mu);
}

unsigned tide__inbox_depth(struct inbox *in)
{
    return atomic_load(&in->depth);
}
