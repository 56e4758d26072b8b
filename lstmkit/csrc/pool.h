// The native loop's large CPU buffers (its saved gates and cells, outputs, dL/dgates, packed weights: megabytes each,
// a new set every call) from a cache of blocks that they return to when freed, so the next call of the same shapes
// writes into memory it already has. A fresh multi-megabyte buffer costs a page fault per page and the kernel's
// zeroing of each page on first write, and glibc maps every buffer of 32 MiB and more afresh (the gates at L and
// XL). Measured with LSTMKIT_NO_POOL toggled step by step in one process (2-core CPU, training steps): T=64, B=64,
// H=512 under bf16 autocast 174 -> 163 ms, in fp32 310 -> 297 ms; T=32, B=64, H=1024 in fp32 621 -> 553 ms.
// Blocks are reused by size class (whole 2 MiB pages, advised as huge pages, from 8 MiB on; 64 KiB grains below): a
// larger free block is not handed out, since PyTorch's memory profiler sees each buffer as the block that holds it
// (as it sees at::empty's). At most kMaxCached bytes of free blocks are kept (the oldest freed first past it, and
// all by `release`). Below kMinBytes glibc's heap reuses freed buffers as fast (1 and 2 MiB: the same time to take
// and fill one), and pooling those too made T=64, B=32, H=256 bf16 training 3-6 % slower than no pool, against 2 %
// faster from 4 MiB on (glibc's heap then holds the small ones it reuses).
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "env.h"

namespace lstmkit {

class BlockPool final : public c10::Allocator {
 public:
  static constexpr size_t kHuge = size_t(1) << 21;       // 2 MiB: a huge page, the unit of blocks from kLarge on
  static constexpr size_t kLarge = size_t(1) << 23;      // 8 MiB
  static constexpr size_t kGrain = size_t(1) << 16;      // 64 KiB: the unit of smaller blocks
  static constexpr size_t kMinBytes = size_t(1) << 22;   // 4 MiB: smaller buffers come from at::empty
  static constexpr size_t kMaxCached = size_t(1) << 30;  // free blocks kept for reuse, at most (1 GiB)

  // The size class of `bytes`, the size of the block that holds it: whole huge pages from kLarge on (at most 25 %
  // more), else whole grains (at most 6 % more).
  static size_t block_size(size_t bytes) {
    const size_t unit = bytes >= kLarge ? kHuge : kGrain;
    return (std::max<size_t>(bytes, 1) + unit - 1) / unit * unit;
  }

  // The process's pool, never destroyed: a tensor may be freed after static destructors have run.
  static BlockPool& get() {
    static BlockPool* pool = new BlockPool;
    return *pool;
  }

  c10::DataPtr allocate(size_t bytes) override {
    size_t size = block_size(bytes);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto [it, end] = free_.equal_range(size);  // a free block of its size class: the last freed, the warmest
      if (it != end) {                            // in cache
        for (auto same = std::next(it); same != end; ++same)
          if (same->second.freed > it->second.freed) it = same;
        size = it->first, p = it->second.block;
        free_.erase(it);
        cached_ -= size;
      }
    }
    if (!p) {
      const bool huge = size >= kLarge;
      p = std::aligned_alloc(huge ? kHuge : kGrain, size);
      TORCH_CHECK(p, "lstmkit: out of memory allocating ", size, " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (huge) madvise(p, size, MADV_HUGEPAGE);  // advice only
#endif
    }
    // LSTMKIT_POOL_POISON=1 (read at every allocation): every block handed out full of 0xff bytes, NaN in every float
    // type, so that a read before a write shows (tests/test_pool.py)
    if (env_flag("LSTMKIT_POOL_POISON")) std::memset(p, 0xff, size);
    size_t allocated, reserved;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_[p] = size;
      allocated = allocated_ += size;
      reserved = allocated_ + cached_;
    }
    c10::reportMemoryUsageToProfiler(p, static_cast<int64_t>(size), allocated, reserved,
                                     c10::Device(c10::DeviceType::CPU));
    return {p, p, &BlockPool::give_back_to_pool, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }

  // Bytes of free blocks held for reuse.
  size_t cached() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  // Frees every block held for reuse (buffers in use stay); returns the bytes freed.
  size_t release() {
    std::multimap<size_t, Free> blocks;
    size_t bytes;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      bytes = cached_;
      cached_ = 0;
    }
    for (const auto& [size, f] : blocks) std::free(f.block);
    return bytes;
  }

 private:
  struct Free {
    void* block;
    uint64_t freed;  // when, in give_back calls: the oldest go first past kMaxCached
  };

  BlockPool() = default;

  static void give_back_to_pool(void* p) { get().give_back(p); }

  void give_back(void* p) {
    size_t size, allocated, reserved;
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = live_.find(p);
      size = it->second;
      live_.erase(it);
      allocated = allocated_ -= size;
      free_.emplace(size, Free{p, ++clock_});
      cached_ += size;
      while (cached_ > kMaxCached) {  // a few dozen blocks at most: a scan for the oldest
        auto oldest = free_.begin();
        for (auto f = free_.begin(); f != free_.end(); ++f)
          if (f->second.freed < oldest->second.freed) oldest = f;
        evicted.push_back(oldest->second.block);
        cached_ -= oldest->first;
        free_.erase(oldest);
      }
      reserved = allocated_ + cached_;
    }
    c10::reportMemoryUsageToProfiler(p, -static_cast<int64_t>(size), allocated, reserved,
                                     c10::Device(c10::DeviceType::CPU));
    for (void* block : evicted) std::free(block);
  }

  mutable std::mutex mutex_;
  std::multimap<size_t, Free> free_;        // size class -> a free block of it
  std::unordered_map<void*, size_t> live_;  // block -> its size, while a tensor holds it
  size_t cached_ = 0, allocated_ = 0;
  uint64_t clock_ = 0;
};

// at::empty(sizes, options), from the pool where it is a large CPU buffer (contents undefined, as at::empty's);
// LSTMKIT_NO_POOL=1 turns the pool off.
inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const size_t bytes = at::detail::computeStorageNbytesContiguous(sizes, options.dtype().itemsize());
  if (bytes < BlockPool::kMinBytes || !options.device().is_cpu() || env_flag("LSTMKIT_NO_POOL"))
    return at::empty(sizes, options);
  return at::Tensor(at::detail::empty_generic(sizes, &BlockPool::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                              options.dtype().toScalarType(), c10::MemoryFormat::Contiguous));
}

// t as a contiguous tensor of `type`: t itself where it already is one, else a conversion into an empty_large buffer
// (as t.to(type).contiguous(), without a fresh large allocation's page faults).
inline at::Tensor converted(const at::Tensor& t, at::ScalarType type) {
  if (t.scalar_type() == type && t.is_contiguous()) return t;
  at::Tensor out = empty_large(t.sizes(), t.options().dtype(type));
  out.copy_(t);
  return out;
}

}  // namespace lstmkit
