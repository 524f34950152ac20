// agent: the software version both nodes compare before pairing (the seeds' "Needs Upgrade").
#pragma once

namespace tandem::agent {
inline constexpr const char* tandem_version = "0.1.0";
}
