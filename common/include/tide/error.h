/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tide's one error space, shared by every room (engine, meta, proto, server,
 * client). A function that can fail returns 0 on success and a negative code
 * on failure: -errno for a system error, or one of the codes below, which sit
 * in a reserved range far from errno (-30800 and below), as LMDB's do.
 * tide_strerror() describes any of them. docs/errors.md is the same table.
 *
 * The codes are frozen: append-only, never renumbered, never reused. Codes
 * that were merged into another are listed as retired so nobody reuses them.
 */
#ifndef TIDE_ERROR_H
#define TIDE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Storage and general (-30800 ... -30809) ---------------------------- */
#define TIDE_ECORRUPT (-30800)   /* a checksum, magic or length is wrong */
#define TIDE_EVERSION (-30801)   /* file format version not supported */
#define TIDE_EFULL (-30802)      /* a configured limit or buffer is full */
#define TIDE_ECLOSED (-30803)    /* the db is closing or closed */
#define TIDE_EIO (-30804)        /* sticky: an earlier write/fsync failed */
#define TIDE_EINVAL (-30805)     /* an argument is out of range */
#define TIDE_ETYPE (-30806)      /* value type differs from the series' */
#define TIDE_ENOTFOUND (-30807)  /* no such series / file / entry */
#define TIDE_ELOCKED (-30808)    /* data directory used by another process */
#define TIDE_EDUPLICATE (-30809) /* batch (producer, sequence) seen before */

/* ---- Accounts, returned by meta (-30810 ... -30813) --------------------- */
#define TIDE_EEXIST (-30810)  /* unique name (email, thing name) taken */
#define TIDE_EPERM (-30811)   /* the principal may not do this */
#define TIDE_EAUTH (-30812)   /* bad, revoked or expired credential */
#define TIDE_EPAUSED (-30813) /* ingestion paused for account or device */

/* ---- Encryption at rest (-30814 ... -30815) ----------------------------- */
#define TIDE_EKEY (-30814)    /* encryption key missing, wrong or destroyed */
#define TIDE_ECIPHER (-30815) /* an encrypted block failed authentication */

/* ---- Frames, returned by the codec in proto/ (-31001 ... -31003) -------- */
#define TIDE_ETOOLARGE (-31001)  /* frame length above the maximum */
#define TIDE_EMALFORMED (-31002) /* payload is not an Envelope */
#define TIDE_ENOSPACE (-31003)   /* output buffer too small */

/* ---- Client, returned by libtide (-31100 ... -31109) -------------------- */
#define TIDE_ESERVER (-31100) /* the server sent Error; see last_error */
/* -31101 retired: was TIDE_CLIENT_EFULL, now TIDE_EFULL */
#define TIDE_ETIMEDOUT (-31102)     /* no answer within a timeout */
#define TIDE_EDISCONNECTED (-31103) /* connection lost mid-request */
#define TIDE_EPROTO (-31104)        /* unexpected or bad response */
/* -31105 retired: was TIDE_CLIENT_EINVAL, now TIDE_EINVAL */
#define TIDE_EBUSY (-31106)     /* a query iterator is open */
#define TIDE_EREJECTED (-31107) /* flush: points were refused */
/* -31108 retired: was TIDE_CLIENT_EAUTH, now TIDE_EAUTH */
#define TIDE_ETLS (-31109) /* TLS handshake or certificate check failed */

/* Return a static, human-readable description of any code above or of a
 * -errno value. Never NULL; thread-safe. */
__attribute__((visibility("default"))) const char *tide_strerror(int rc);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_ERROR_H */
