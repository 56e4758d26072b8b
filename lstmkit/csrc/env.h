// The native engine's switches from the environment (LSTMKIT_PORTABLE_BF16, LSTMKIT_PORTABLE_INT8, LSTMKIT_NO_POOL,
// LSTMKIT_POOL_POISON).
#pragma once

#include <cstdlib>
#include <cstring>

namespace lstmkit {

// Whether the environment variable `name` is set to something other than "" or "0" (read at each call).
inline bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value && *value && std::strcmp(value, "0") != 0;
}

}  // namespace lstmkit
