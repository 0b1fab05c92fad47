/* SHA-256 of one buffer (the shim front's fork-server key). */
#ifndef KS_SHA256_H
#define KS_SHA256_H

#include <stddef.h>
#include <stdint.h>

void ks_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
