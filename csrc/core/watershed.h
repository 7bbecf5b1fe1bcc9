// Marker-based watershed on 2-D images, matching skimage.segmentation.watershed (scikit-image 0.26).
//
// CPU, exact: `watershed_cpu` reproduces scikit-image's priority flood pixel for pixel (heap keyed by
// (float64 value, age); a pixel's key is max(its value, the key of the neighbour that pushed it); the
// label is taken at push time from the popped neighbour; neighbours in the order up, left, right, down
// [, up-left, up-right, down-left, down-right]). See watershed.cpp for how ties are kept exact while
// most of the flood runs on a cheaper queue.
//
// Emulated GPU algorithm: `watershed_emulated` runs the parallel device algorithm of
// csrc/kernels/watershed.h through the CPU emulated grid (nf::CpuExec).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace nf {

// image: H*W float64 (C order); markers: H*W labels >= 0 (0 = not a marker); mask: H*W bytes
// (nonzero = flood here) or nullptr for everywhere; connectivity 1 (4-neighbours) or 2 (8-neighbours).
// out: H*W labels (0 = unlabelled, outside the mask, or a watershed line).
// L is int32_t or int64_t.
template <class L>
void watershed_cpu(const double* image, const L* markers, const uint8_t* mask, int64_t H, int64_t W,
                   int connectivity, bool watershed_line, L* out);

// The device algorithm (minimax cost relaxation + plateau hops + parent pointers + pointer jumping)
// run on the CPU. Returns the number of relaxation sweeps used (for diagnostics), or -1 if a
// relaxation failed to converge within its bound (cannot happen; checked).
int64_t watershed_emulated(const double* image, const int64_t* markers, const uint8_t* mask, int64_t H,
                           int64_t W, int connectivity, int64_t* out);

namespace ws_detail {
// Order-preserving map from a (non-NaN) double to uint64 (-0.0 and +0.0 map to the same key).
inline uint64_t ordered_key(double x) {
  x = x + 0.0;  // -0.0 -> +0.0, as scikit-image compares values with ==
  uint64_t b;
  __builtin_memcpy(&b, &x, sizeof b);
  return (b >> 63) ? ~b : (b | (uint64_t(1) << 63));
}

// The binary heap of scikit-image (heap_general.pxi): same sift-up/sift-down with strict comparisons
// of (value, age) only, so equal keys (markers of equal value, all of age 0) come out in exactly the
// same order. Item needs key, age(), index() and make(). Exposed for tests.
struct ExactItem {  // any size; carries the source label (watershed-line mode)
  uint64_t key;
  uint64_t age_;
  int64_t idx;
  int64_t label;
  static ExactItem make(uint64_t k, uint64_t a, int64_t i, int64_t l = 0) { return {k, a, i, l}; }
  uint64_t age() const { return age_; }
  int64_t index() const { return idx; }
  bool smaller(const ExactItem& o) const { return key != o.key ? key < o.key : age_ < o.age_; }
};
struct PackedExactItem {  // index and age both < 2^32: 16 bytes
  uint64_t key;
  uint64_t age_index;
  static PackedExactItem make(uint64_t k, uint64_t a, int64_t i, int64_t = 0) {
    return {k, (a << 32) | static_cast<uint64_t>(i)};
  }
  uint64_t age() const { return age_index >> 32; }
  int64_t index() const { return static_cast<int64_t>(age_index & 0xffffffffu); }
  bool smaller(const PackedExactItem& o) const {
    return key != o.key ? key < o.key : (age_index >> 32) < (o.age_index >> 32);
  }
};

template <class Item>
struct ExactHeap {
  Item* data = nullptr;
  int64_t items = 0;
  int64_t space = 0;
  ExactHeap() = default;
  ExactHeap(const ExactHeap&) = delete;
  ExactHeap& operator=(const ExactHeap&) = delete;
  ~ExactHeap() { delete[] data; }
  void push(const Item& e) {
    if (items == space) {
      const int64_t ns = space ? space * 2 : 1024;
      Item* nd = new Item[ns];
      for (int64_t i = 0; i < items; ++i) nd[i] = data[i];
      delete[] data;
      data = nd;
      space = ns;
    }
    int64_t child = items++;
    while (child > 0) {
      const int64_t parent = (child + 1) / 2 - 1;
      if (!e.smaller(data[parent])) break;
      data[child] = data[parent];
      child = parent;
    }
    data[child] = e;
  }
  Item pop() {  // requires items > 0
    const Item res = data[0];
    --items;
    if (items == 0) return res;
    const Item last = data[items];
    int64_t i = 0;
    while (true) {
      const int64_t l = 2 * i + 1, r = 2 * i + 2;
      if (l >= items) break;
      __builtin_prefetch(data + 4 * i + 3);  // grandchildren
      __builtin_prefetch(data + 4 * i + 6);
      // skimage: smallest = l if data[l] < data[i]; then r if data[r] < data[smallest] (strict).
      int64_t smallest = i;
      const Item* sv = &last;
      if (data[l].smaller(*sv)) {
        smallest = l;
        sv = data + l;
      }
      if (r < items && data[r].smaller(*sv)) smallest = r;
      if (smallest == i) break;
      data[i] = data[smallest];
      i = smallest;
    }
    data[i] = last;
    return res;
  }
};

// The per-component queue of the exact flood: pops pixels in scikit-image's (key, age) order, where age
// is the push order, for monotone pushes (every pushed key >= the last popped key, true of the flood
// without watershed lines). Keys are read from val[p] (the caller stores a pixel's key there before
// pushing it); nxt[] links the pixels of a bucket (each pixel is pushed at most once).
//
// Buckets: the key range [vmin, vmax] of the component is cut into `count` equal-width buckets, indexed by
// a monotone function of the key (floor((key - vmin) * scale)), so equal keys share a bucket and a
// smaller key never lands in a later bucket. A pixel pushed into a later bucket than the current one is
// appended to that bucket's list (O(1); a list is in age order) and the bucket's bit is set in a bitmap.
// When the cursor reaches a bucket (next set bit), its list is stably sorted by key in place if it is not
// already ordered (a few pixels on average: insertion sort), which gives (key, age) order. While the
// current bucket is consumed, pushes that land in it go to a FIFO when their key equals the key being
// popped (plateaus: the newest age, after every queued item of that key) and to a small binary heap of
// (key, age) otherwise. At equal keys the list (pushed before the bucket was reached) comes first, then
// the heap, then the FIFO; so every pop is the (key, age) minimum. No rescans: a pixel is appended once,
// sorted once and popped once; the bitmap is walked once per component.
template <class I>
class LevelQueue {
 public:
  LevelQueue() = default;
  LevelQueue(const LevelQueue&) = delete;
  LevelQueue& operator=(const LevelQueue&) = delete;

  // Empties the queue for keys in [vmin, vmax], about `count` pixels, keys in val[], links in nxt[].
  void reset(double* val, I* nxt, double vmin, double vmax, int64_t count) {
    val_ = val;
    nxt_ = nxt;
    vmin_ = vmin;
    scale_ = 0.0;
    nb_ = 1;
    const double range = vmax - vmin;
    if (count > 1 && range > 0.0 && range <= std::numeric_limits<double>::max()) {
      const double s = static_cast<double>(count - 1) / range;
      if (s <= std::numeric_limits<double>::max()) {
        scale_ = s;
        nb_ = static_cast<I>(count);
      }
    }
    bits_.assign(static_cast<size_t>(nb_) / 64 + 1, 0);
    head_.resize(static_cast<size_t>(nb_));
    tail_.resize(static_cast<size_t>(nb_));
    b_ = -1;
    s_ = -1;
    fifo_.clear();
    fh_ = 0;
    heap_.clear();
    age_ = 0;
    started_ = false;
    cur_ = -std::numeric_limits<double>::infinity();
  }

  // Before the first pop: the start items, in (key, age) order (equal keys: the order given).
  void push_start(I p) { append(bucket(val_[p]), p); }
  // After a pop: p's key val[p] equals the key just popped (a plateau).
  void push_level(I p) { fifo_.push_back(p); }
  // After a pop: p's key v == val[p] is larger than the key just popped.
  void push_above(I p, double v) {
    const I bn = bucket(v);
    if (bn > b_) {
      append(bn, p);
    } else {
      heap_push(Item{v, ++age_, p});
    }
  }
  // Any push (key val[p] >= the last popped key).
  void push(I p) {
    const double v = val_[p];
    if (!started_) {
      push_start(p);
    } else if (v <= cur_) {
      push_level(p);
    } else {
      push_above(p, v);
    }
  }

  // Pops the (key, age) minimum into p; false when empty.
  bool pop(I& p) {
    started_ = true;
    while (true) {
      const I s = s_;
      if (heap_.empty() && fifo_.empty()) {  // the usual case: only the current bucket's list
        if (s >= 0) {
          p = s;
          s_ = nxt_[s];
          cur_ = val_[p];
          return true;
        }
        if (!next_bucket()) return false;
        continue;
      }
      if (!fifo_.empty() && (s < 0 || val_[s] > cur_) && (heap_.empty() || heap_[0].key > cur_)) {
        p = fifo_[fh_++];
        if (fh_ == fifo_.size()) {
          fifo_.clear();
          fh_ = 0;
        }
        return true;  // key == cur_
      }
      if (s >= 0 && (heap_.empty() || val_[s] <= heap_[0].key)) {
        p = s;
        s_ = nxt_[s];
      } else {
        p = heap_pop().idx;  // the heap is not empty here (else the FIFO branch was taken)
      }
      cur_ = val_[p];
      return true;
    }
  }

  double current_key() const { return cur_; }
  I buckets() const { return nb_; }

 private:
  struct Item {
    double key;
    I age;
    I idx;
  };
  static bool less(const Item& a, const Item& b) { return a.key < b.key || (a.key == b.key && a.age < b.age); }

  I bucket(double v) const {
    const double x = (v - vmin_) * scale_;
    const I b = static_cast<I>(x);
    return b < nb_ ? b : nb_ - 1;
  }

  void append(I bn, I p) {
    nxt_[p] = I(-1);
    uint64_t& w = bits_[static_cast<size_t>(bn) >> 6];
    const uint64_t bit = uint64_t(1) << (bn & 63);
    if (!(w & bit)) {
      w |= bit;
      head_[bn] = p;
    } else {
      nxt_[tail_[bn]] = p;
    }
    tail_[bn] = p;
  }

  // Moves the cursor to the next non-empty bucket and orders its list by (key, age).
  bool next_bucket() {
    const I from = b_ + 1;
    if (from >= nb_) return false;
    size_t w = static_cast<size_t>(from) >> 6;
    uint64_t word = bits_[w] & (~uint64_t(0) << (from & 63));
    const size_t nw = bits_.size();
    while (word == 0) {
      if (++w >= nw) {
        b_ = nb_;
        return false;
      }
      word = bits_[w];
    }
    const I b = static_cast<I>(w * 64 + static_cast<size_t>(__builtin_ctzll(word)));
    b_ = b;
    const I h = head_[b];
    const double* v = val_;
    for (I p = h, q = nxt_[h]; q >= 0; p = q, q = nxt_[q]) {
      if (v[q] < v[p]) {  // not ordered: sort stably by key and relink
        sort_list(b);
        break;
      }
    }
    s_ = head_[b];
    return true;
  }

  void sort_list(I b) {
    const double* v = val_;
    tmp_.clear();
    for (I p = head_[b]; p >= 0; p = nxt_[p]) tmp_.push_back(p);
    const size_t n = tmp_.size();
    if (n <= 32) {  // stable insertion sort
      for (size_t i = 1; i < n; ++i) {
        const I x = tmp_[i];
        const double kx = v[x];
        size_t j = i;
        while (j > 0 && v[tmp_[j - 1]] > kx) {
          tmp_[j] = tmp_[j - 1];
          --j;
        }
        tmp_[j] = x;
      }
    } else {
      std::stable_sort(tmp_.begin(), tmp_.end(), [v](I a, I c) { return v[a] < v[c]; });
    }
    head_[b] = tmp_[0];
    for (size_t i = 0; i + 1 < n; ++i) nxt_[tmp_[i]] = tmp_[i + 1];
    nxt_[tmp_[n - 1]] = I(-1);
  }

  void heap_push(const Item& e) {
    size_t c = heap_.size();
    heap_.push_back(e);
    while (c > 0) {
      const size_t p = (c - 1) / 2;
      if (!less(e, heap_[p])) break;
      heap_[c] = heap_[p];
      c = p;
    }
    heap_[c] = e;
  }
  Item heap_pop() {
    const Item r = heap_[0];
    const Item last = heap_.back();
    heap_.pop_back();
    const size_t n = heap_.size();
    if (n > 0) {
      size_t i = 0;
      while (true) {
        const size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = l;
        if (l + 1 < n && less(heap_[l + 1], heap_[l])) m = l + 1;
        if (!less(heap_[m], last)) break;
        heap_[i] = heap_[m];
        i = m;
      }
      heap_[i] = last;
    }
    return r;
  }

  double* val_ = nullptr;
  I* nxt_ = nullptr;
  double vmin_ = 0.0, scale_ = 0.0, cur_ = 0.0;
  I nb_ = 1, b_ = -1, age_ = 0, s_ = -1;
  bool started_ = false;
  std::vector<uint64_t> bits_;
  std::vector<I> head_, tail_, fifo_, tmp_;
  size_t fh_ = 0;
  std::vector<Item> heap_;
};

}  // namespace ws_detail

}  // namespace nf
