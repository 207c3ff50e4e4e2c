/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration-test support: start the real tided on 127.0.0.1 with port 0
 * and a temporary data directory, wait for its ready line, stop or kill it,
 * and speak raw frames to it.
 */
#ifndef TIDE_TESTS_SUPPORT_TIDED_H
#define TIDE_TESTS_SUPPORT_TIDED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tide.pb-c.h"

struct tided_proc {
    pid_t pid;
    int port;
    int http_port;
    char dir[512];
    char admin_key[128];
};

/* Start tided on `dir` (created by the caller) with extra "--set k=v"
 * arguments (NULL-terminated, may be NULL; an entry "--flag" is passed as
 * it is). Waits up to 20 s for the ready
 * line. Returns 0 or -1 (the test should fail). */
int tided_start(struct tided_proc *p, const char *dir,
                const char *const *settings);

/* The fixture of an integration suite: a fresh directory from
 * test_tmpdir(), copied into dir[dir_len], and tided started on it as
 * tided_start() does. Returns as tided_start(). */
int tided_start_fresh(struct tided_proc *p, char *dir, size_t dir_len,
                      const char *const *settings);

/* The end of that fixture: tided_kill(), then remove `dir` and everything
 * below it. */
void tided_kill_fresh(struct tided_proc *p, const char *dir);

/* SIGTERM and wait; returns the exit status (0 on a clean shutdown), or -1
 * after 20 s (the process is then killed). */
int tided_stop(struct tided_proc *p);

/* SIGKILL and reap. */
void tided_kill(struct tided_proc *p);

/* A blocking TCP connection to 127.0.0.1:port with a 10 s receive timeout.
 * Returns the fd or -1. */
int wire_connect(int port);

/* Send one envelope as a frame. Returns 0 or -1. */
int wire_send(int fd, const Tide__V1__Envelope *env);

/* Send raw bytes. Returns 0 or -1. */
int wire_send_raw(int fd, const void *p, size_t n);

/* Receive one frame's body, at most `max` bytes (malloc'd, *n its
 * length). Returns NULL on EOF, timeout, error or a larger frame. */
uint8_t *wire_recv_frame(int fd, size_t max, size_t *n);

/* Receive one envelope (free with tide_frame_free). Returns NULL on EOF,
 * timeout or a bad frame. */
Tide__V1__Envelope *wire_recv(int fd);

/* True when the peer has closed the connection (EOF within 10 s). */
int wire_closed(int fd);

/* Hello then Auth with `key` on a new connection; returns the fd, or -1
 * when any step fails. */
int wire_session(int port, const char *key);

/* One request and its single response (NULL on failure). */
Tide__V1__Envelope *wire_call(int fd, Tide__V1__Envelope *req);

/* GET `path` from the HTTP port; the body (malloc'd, NUL-terminated) or
 * NULL. *status gets the HTTP status. */
char *http_get(int port, const char *path, int *status);

#endif /* TIDE_TESTS_SUPPORT_TIDED_H */
