// replication: the NBD transmission protocol, server side — what nbd.ko sends over each socket.
#pragma once

#include "tandem/replication/engine.hpp"

namespace tandem::replication {

// Serves one NBD connection (the kernel's end of a socket pair) until the
// client sends NBD_CMD_DISC or the socket closes: reads, writes (FUA: durable
// on both nodes before the reply), flushes. A request the engine refuses gets
// an error reply (EROFS on a secondary, EINVAL misaligned, ENOSPC past the end);
// a malformed request (bad magic) ends the connection. Returns the number of
// requests served.
std::uint64_t nbd_serve(engine& e, int fd);

}  // namespace tandem::replication
