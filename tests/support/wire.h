/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration-test support over raw frames, shared by the suites: the
 * fixture's server, numbered requests, and the operator's and owner's
 * setup steps. Each helper asserts (Criterion) that its step succeeded.
 */
#ifndef TIDE_TESTS_SUPPORT_WIRE_H
#define TIDE_TESTS_SUPPORT_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tided.h"

/* The server of the running test, its data directory and T0, an hour
 * before the fixture started: timestamps offset from it are inside every
 * retention. */
extern struct tided_proc srv;
extern char dir[1024];
extern int64_t T0;

/* The request id the next wire_next() call takes (100 at the start). */
extern uint64_t next_rid;

/* Set T0, then tided_start_fresh(&srv, dir, ...) with `settings`,
 * asserting that tided started. */
void fixture_start(const char *const *settings);

/* The suites' .init (fixture_start(NULL)) and .fini
 * (tided_kill_fresh(&srv, dir)). */
void fixture_init(void);
void fixture_fini(void);

/* Number `e` with next_rid++ and wire_call() it. */
Tide__V1__Envelope *wire_next(int fd, Tide__V1__Envelope *e);

/* The message of an Error response, for assertion output. */
const char *wire_why(const Tide__V1__Envelope *r);

/* wire_next() `e` and expect Ok; `what` names the request on failure. */
void wire_call_ok(int fd, Tide__V1__Envelope *e, const char *what);

/* As the operator on `fd`: create or change tier `name` (30-day telemetry
 * TTL) with a points/s and a daily points limit (0 = none). */
void wire_tier_upsert(int fd, const char *name, uint64_t points_per_s,
                      uint64_t daily_points);

/* As the operator on `fd`: an account of `email` (password "correct horse
 * battery") on tier `tier`. Returns its id. */
uint64_t wire_account_create(int fd, const char *email, const char *tier);

/* The same on tier "unlimited", created first without limits. */
uint64_t wire_make_account(int fd, const char *email);

/* As the operator on `fd`: register device `name` of `account`. */
void wire_device_register(int fd, uint64_t account, const char *name);

/* As the operator on `fd`: a key `name` with `role` of `account` (for
 * `device`, or NULL); its secret into key[cap]. */
void wire_key_create(int fd, uint64_t account, const char *name,
                     Tide__V1__Role role, const char *device, char *key,
                     size_t cap);

/* Hello on `fd` (wire_next), asserting HelloOk. */
void wire_hello(int fd);

/* A new connection to `port` after its Hello; the fd (asserted). */
int wire_hello_connect(int port);

/* Login of `email` with the password "correct horse battery" on `fd`
 * (after Hello), asserting LoginOk; the session token into token[cap]. */
void wire_login(int fd, const char *email, char *token, size_t cap);

/* Auth with the session `token` on `fd` (after Hello), asserting AuthOk. */
void wire_auth_token(int fd, const char *token);

/* Hello, Login with the password and Auth with the session token on
 * `fd`: it becomes a connection of the account owner `email`. */
void wire_owner_login(int fd, const char *email);

/* The same on a new connection to `port`; the fd. */
int wire_owner_session(int port, const char *email);

/* A WriteBatch of one group of `device` with one f64 column `field`: n
 * timestamps (deltas, the first absolute) and n values, which the caller
 * keeps alive. All of it lives in `b`; returns &b->env, request id 0, for
 * the caller to adjust (producer, sequence, more columns) and send. */
struct wire_batch {
    Tide__V1__Envelope env;
    Tide__V1__WriteBatch wb;
    Tide__V1__PointGroup g, *gp;
    Tide__V1__Column c, *cp;
};
Tide__V1__Envelope *wire_batch_f64(struct wire_batch *b, const char *device,
                                   const char *field, int64_t *ts_delta_ns,
                                   double *v, size_t n);

/* Encode `env` into a malloc'd frame (length prefix included); *n gets
 * its size. Asserts. */
uint8_t *wire_encode(const Tide__V1__Envelope *env, size_t *n);

/* One Ping on `fd` (wire_next); its round trip in microseconds. Asserts
 * the Pong. */
int64_t wire_ping_us(int fd);

/* Run the tide CLI ($TIDE_BIN, else build/release/tide) against the
 * fixture's server with TIDE_KEY=key and `args`, its standard input from
 * `input` when not NULL (written to a file in the fixture's directory).
 * Returns its exit status (-1 when it did not exit); its standard output
 * into out[cap]. */
int fixture_cli(const char *key, const char *args, const char *input, char *out,
                size_t cap);

/* A "kB" field of /proc/<pid>/status, such as "VmRSS" (resident now) or
 * "VmHWM" (the peak), in KiB; -1 when it cannot be read. The same as
 * proc_status_kib() (proc.h). */
long wire_proc_kb(pid_t pid, const char *field);

#endif /* TIDE_TESTS_SUPPORT_WIRE_H */
