// base: HMAC-SHA256 through libcrypto's one-shot HMAC().
#include "tandem/base/hmac.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace tandem {

hmac_sha256_digest hmac_sha256(std::span<const std::byte> key, std::span<const std::byte> message) noexcept {
    hmac_sha256_digest out{};
    unsigned int len = 0;
    // HMAC() cannot fail for SHA-256 with in-memory inputs short of OOM inside
    // libcrypto; a zero digest then fails every comparison, which is safe.
    ::HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(),
           reinterpret_cast<unsigned char*>(out.data()), &len);
    return out;
}

bool equal_constant_time(std::span<const std::byte> a, std::span<const std::byte> b) noexcept {
    if (a.size() != b.size()) return false;
    return ::CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace tandem
