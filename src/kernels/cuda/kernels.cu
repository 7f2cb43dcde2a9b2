// The CUDA backend's kernels, compiled by NVRTC at load for the GPU present
// (src/kernels/cuda/mod.rs). No headers: f16 conversions are PTX `cvt`, so
// NVRTC needs no include path on any CUDA version (11.4 to 13).
//
// Every kernel runs over a batch of images: blockIdx.y (or .z) is the image,
// and each operand is a base pointer plus a batch stride in elements (0 for a
// constant). The argument structs mirror the #[repr(C)] structs of
// src/engine/cuda/args.rs field for field.

#define MAXR 8

typedef unsigned short h16;
typedef long long i64;
typedef unsigned long long u64;

__device__ __forceinline__ h16 f2h(float f) {
    h16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// As the CPU's `quantize`: clamp(round_half_even(v * r), -127, 127), NaN 0.
__device__ __forceinline__ int quant(float v, float r) {
    float x = v * r;
    // fmaxf(NaN, -127) is -127: test first, as the CPU's clamp keeps NaN.
    if (isnan(x)) return 0;
    return __float2int_rn(fminf(fmaxf(x, -127.0f), 127.0f));
}

__device__ __forceinline__ float binop(int op, float a, float b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return fmaxf(a, b);
    default: return fminf(a, b);
    }
}

__device__ __forceinline__ float unop(int op, float alpha, float x) {
    switch (op) {
    case 0: return fabsf(x);
    case 1: return 1.0f / x;
    case 2: return rintf(x);
    case 3: return 1.0f / (1.0f + expf(-x));
    case 4: return rsqrtf(x);
    case 5: return sqrtf(x);
    case 6: return x * x;
    case 7: return expf(x);
    case 11: return x;  // identity: a launch that only applies posts
    case 8: return -x;
    case 9: return tanhf(x);
    case 12: return erff(x);
    case 13: return 0.5f * x * erfcf(-x * 0.70710678118654752f);
    default: return x / (1.0f + expf(-alpha * x));
    }
}


// A shape with each size's division by multiply-high (as PyTorch's
// IntDivider): q = (umulhi(n, magic) + n) >> shift, exact for n < 2^31.
// Index arithmetic with `%` and `/` cost more than the data movement.
struct Dims {
    int d[MAXR];
    unsigned magic[MAXR];
    unsigned shift[MAXR];
};

// The coordinate along axis k of `rem` (an index over the axes up to k),
// `rem` becoming the index over the axes before k.
__device__ __forceinline__ int divmod(const Dims& s, int k, int& rem) {
    unsigned q = (__umulhi((unsigned)rem, s.magic[k]) + (unsigned)rem) >> s.shift[k];
    int c = rem - (int)q * s.d[k];
    rem = (int)q;
    return c;
}

#define MAXP 4

// Element-wise ops fused into a step's last write (the CPU engine's
// epilogue): y = f(y), or y = y op other / other op y, `other` read through
// its broadcast strides over the output's dims. `i` is the value's index in
// the step's (contiguous) output.
struct Posts {
    int count;
    int op[MAXP];       // a binary op, or 16 + a unary op
    int y_first[MAXP];
    float alpha[MAXP];
    int rank[MAXP];
    Dims dims[MAXP];
    int so[MAXP][MAXR];
    u64 other[MAXP];
    i64 other_bs[MAXP];
};

__device__ __forceinline__ float apply_posts(const Posts& p, i64 img, int i, float y) {
    for (int q = 0; q < p.count; ++q) {
        if (p.op[q] >= 16) {
            y = unop(p.op[q] - 16, p.alpha[q], y);
            continue;
        }
        int rem = i, off = 0;
        for (int d = p.rank[q] - 1; d >= 0; --d) off += divmod(p.dims[q], d, rem) * p.so[q][d];
        float o = ((const float*)p.other[q] + img * p.other_bs[q])[off];
        y = p.y_first[q] ? binop(p.op[q], y, o) : binop(p.op[q], o, y);
    }
    return y;
}

extern "C" {

struct BinaryArgs {
    int op, rank;
    Dims dims;
    int sa[MAXR];
    int sb[MAXR];
    i64 n;
    u64 out; i64 out_bs;
    u64 a; i64 a_bs;
    u64 b; i64 b_bs;
    Posts posts;
};

// out[i] = a[..] op b[..] over `dims` (out contiguous), a and b through
// their broadcast strides. In place when out is a or b (a fused epilogue).
// Sizes and offsets within one image fit in 32 bits (checked at load).
__global__ void ce_binary(BinaryArgs p) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    i64 img = blockIdx.y;
    int rem = i, oa = 0, ob = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
        int c = divmod(p.dims, d, rem);
        oa += c * p.sa[d];
        ob += c * p.sb[d];
    }
    const float* a = (const float*)p.a + img * p.a_bs;
    const float* b = (const float*)p.b + img * p.b_bs;
    float* out = (float*)p.out + img * p.out_bs;
    out[i] = apply_posts(p.posts, img, i, binop(p.op, a[oa], b[ob]));
}

struct UnaryArgs {
    int op;
    float alpha;
    i64 n;
    u64 out; i64 out_bs;
    u64 x; i64 x_bs;
    Posts posts;
};

__global__ void ce_unary(UnaryArgs p) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    i64 img = blockIdx.y;
    const float* x = (const float*)p.x + img * p.x_bs;
    float* out = (float*)p.out + img * p.out_bs;
    out[i] = apply_posts(p.posts, img, i, unop(p.op, p.alpha, x[i]));
}

struct ReduceArgs {
    int op, krank, rrank;
    Dims kdims;
    int ksx[MAXR];
    int kso[MAXR];
    Dims rdims;
    int rsx[MAXR];
    i64 nred;
    float count;
    u64 x; i64 x_bs;
    u64 out; i64 out_bs;
    Posts posts;
};

__device__ __forceinline__ float red_init(int op) {
    return (op == 0 || op == 3) ? 0.0f : (op == 2 ? __int_as_float(0x7f800000) : __int_as_float(0xff800000));
}

__device__ __forceinline__ float red_step(int op, float acc, float v) {
    switch (op) {
    case 0: return acc + v;              // Sum
    case 1: return fmaxf(acc, v);        // Max
    case 2: return fminf(acc, v);        // Min
    case 3: return acc + v * v;          // MeanOfSquares
    default: return fmaxf(acc, fabsf(v)); // AbsMax
    }
}

__device__ __forceinline__ float red_join(int op, float a, float b) {
    switch (op) {
    case 0: case 3: return a + b;
    case 2: return fminf(a, b);
    default: return fmaxf(a, b);
    }
}

// One block per output value: its kept coordinates from blockIdx.x, the
// reduced ones walked by the block's threads.
__global__ void ce_reduce(ReduceArgs p) {
    __shared__ float part[256];
    i64 img = blockIdx.y;
    int rem = blockIdx.x, base = 0, oo = 0;
    for (int d = p.krank - 1; d >= 0; --d) {
        int c = divmod(p.kdims, d, rem);
        base += c * p.ksx[d];
        oo += c * p.kso[d];
    }
    const float* x = (const float*)p.x + img * p.x_bs + base;
    float acc = red_init(p.op);
    for (int j = threadIdx.x; j < p.nred; j += blockDim.x) {
        int r = j, off = 0;
        for (int d = p.rrank - 1; d >= 0; --d) {
            int c = divmod(p.rdims, d, r);
            off += c * p.rsx[d];
        }
        acc = red_step(p.op, acc, x[off]);
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] = red_join(p.op, part[threadIdx.x], part[threadIdx.x + s]);
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float v = part[0];
        if (p.op == 3) v /= p.count;
        ((float*)p.out + img * p.out_bs)[oo] = apply_posts(p.posts, img, oo, v);
    }
}

struct AxisArgs {
    int outer, n, inner, center;
    float eps;
    u64 x; i64 x_bs;
    u64 out; i64 out_bs;
    Posts posts;
};

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Softmax along an axis: one warp per (outer, inner) line, eight lines a
// block (a whole warp leaves together, so the shuffles see every lane).
__global__ void ce_softmax(AxisArgs p) {
    int line = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (line >= p.outer * p.inner) return;
    i64 img = blockIdx.y;
    int o = line / p.inner, in = line % p.inner;
    int base = o * p.n * p.inner + in;
    const float* x = (const float*)p.x + img * p.x_bs + base;
    float* out = (float*)p.out + img * p.out_bs + base;
    float m = __int_as_float(0xff800000);
    for (int t = lane; t < p.n; t += 32) m = fmaxf(m, x[t * p.inner]);
    m = warp_max(m);
    float s = 0.0f;
    for (int t = lane; t < p.n; t += 32) {
        float e = expf(x[t * p.inner] - m);
        out[t * p.inner] = e;
        s += e;
    }
    float inv = 1.0f / warp_sum(s);
    for (int t = lane; t < p.n; t += 32)
        out[t * p.inner] = apply_posts(p.posts, img, base + t * p.inner, out[t * p.inner] * inv);
}

// The sum over a block of 256 threads (8 warps).
__device__ __forceinline__ float block_sum256(float v, float* part) {
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = 0.0f;
    for (int w = 0; w < 8; ++w) r += part[w];
    __syncthreads();
    return r;
}

// x · rsqrt(mean(x²) + eps) along an axis, of x - mean(x) with `center`:
// one block per line (a warp per line leaves LayerNorm's 768 values
// latency-bound).
__global__ void ce_norm(AxisArgs p) {
    __shared__ float part[8];
    i64 img = blockIdx.y;
    int line = blockIdx.x;
    int o = line / p.inner, in = line % p.inner;
    int base = o * p.n * p.inner + in;
    const float* x = (const float*)p.x + img * p.x_bs + base;
    float* out = (float*)p.out + img * p.out_bs + base;
    float inv_n = 1.0f / (float)p.n;
    float mean = 0.0f;
    if (p.center) {
        float s = 0.0f;
        for (int t = threadIdx.x; t < p.n; t += blockDim.x) s += x[t * p.inner];
        mean = block_sum256(s, part) * inv_n;
    }
    float q = 0.0f;
    for (int t = threadIdx.x; t < p.n; t += blockDim.x) {
        float d = x[t * p.inner] - mean;
        q += d * d;
    }
    float r = 1.0f / sqrtf(block_sum256(q, part) * inv_n + p.eps);
    for (int t = threadIdx.x; t < p.n; t += blockDim.x)
        out[t * p.inner] = apply_posts(p.posts, img, base + t * p.inner, (x[t * p.inner] - mean) * r);
}

struct CopyArgs {
    int rank;
    Dims dims;
    int ss[MAXR];
    int sd[MAXR];
    i64 n;
    u64 src; i64 src_bs;
    u64 dst; i64 dst_bs;
};

// A strided view of src into a strided view of dst (offsets folded into
// the pointers).
__global__ void ce_copy(CopyArgs p) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    i64 img = blockIdx.y;
    int rem = i, os = 0, od = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
        int c = divmod(p.dims, d, rem);
        os += c * p.ss[d];
        od += c * p.sd[d];
    }
    ((float*)p.dst + img * p.dst_bs)[od] = ((const float*)p.src + img * p.src_bs)[os];
}

struct GatherArgs {
    int rows, k, kpad, quantize;
    int unit;      // col_off[t] == t: the table is not read
    u64 row_off;   // int[rows]: each row's offset in a
    u64 col_off;   // int[k]: each depth's offset from its row's
    u64 a; i64 a_bs;
    u64 s; i64 s_bs;  // quantize: float scales, read at s_off[row]
    u64 s_off;     // int[rows]
    u64 out;       // [images][rows][kpad] of out_type
    int out_type;  // 0 f16, 1 int8, 2 f32
};

// A product's left (or right) side, gathered through its offset tables into
// contiguous rows of kpad values (zero past k): as f16 or f32, or quantised
// to int8 with its row's scale (as int8 values in f16 where the GPU has no
// int8 matrix units).
__global__ void ce_gather(GatherArgs p) {
    // A thread per value: blocks along the row (x), rows (y), images (z).
    // (A block per row with a loop measured no faster: see
    // docs/benchmarks.md.)
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= p.kpad) return;
    i64 r = blockIdx.y, img = blockIdx.z;
    float v = 0.0f;
    if (t < p.k) {
        const int* ro = (const int*)p.row_off;
        const int* co = (const int*)p.col_off;
        v = ((const float*)p.a + img * p.a_bs)[ro[r] + (p.unit ? t : co[t])];
        if (p.quantize) {
            float s = ((const float*)p.s + img * p.s_bs)[((const int*)p.s_off)[r]];
            v = (float)quant(v, 1.0f / s);
        }
    }
    i64 at = (img * p.rows + r) * p.kpad + t;
    if (p.out_type == 1) ((signed char*)p.out)[at] = (signed char)(int)v;
    else if (p.out_type == 2) ((float*)p.out)[at] = v;
    else ((h16*)p.out)[at] = f2h(v);
}

struct ScatterArgs {
    int rows, n, npad, acc_i32, dequant;
    int unit;      // col_off[j] == j
    u64 c;         // float or int [images][rows][npad]
    u64 row_off;   // int[rows]
    u64 col_off;   // int[n]
    u64 out; i64 out_bs;
    u64 s; i64 s_bs; u64 s_off;  // dequant: row scales
    u64 wscale;    // dequant: float[n], per output channel
    Posts posts;
};

// A product's result into its place in the output; int8 sums dequantised
// with their row's and channel's scales.
__global__ void ce_scatter(ScatterArgs p) {
    // A thread per value, as ce_gather.
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= p.n) return;
    i64 r = blockIdx.y, img = blockIdx.z;
    i64 at = (img * p.rows + r) * p.npad + j;
    float v = p.acc_i32 ? (float)((const int*)p.c)[at] : ((const float*)p.c)[at];
    if (p.dequant) {
        float s = ((const float*)p.s + img * p.s_bs)[((const int*)p.s_off)[r]];
        v = v * (s * ((const float*)p.wscale)[j]);
    }
    int o = ((const int*)p.row_off)[r] + (p.unit ? j : ((const int*)p.col_off)[j]);
    ((float*)p.out + img * p.out_bs)[o] = apply_posts(p.posts, img, o, v);
}

struct Im2colArgs {
    int c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw;
    int kk, kpad, ppad, quantize, out_i8;
    u64 x; i64 x_bs;
    u64 s; i64 s_bs;  // quantize: one scale per image, s[0]
    u64 out;          // [images][ppad][kpad]
};

// A convolution's patches, one row of kpad values per output pixel (zero
// past kk and on padded pixels).
__global__ void ce_im2col(Im2colArgs p) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= p.kpad) return;
    i64 pix = blockIdx.y, img = blockIdx.z;
    float v = 0.0f;
    int np = p.oh * p.ow;
    if (t < p.kk && pix < np) {
        int ci = t / (p.kh * p.kw), kr = t % (p.kh * p.kw);
        int ky = kr / p.kw, kx = kr % p.kw;
        int oy = (int)pix / p.ow, ox = (int)pix % p.ow;
        int y = oy * p.sh + ky * p.dh - p.ph, x = ox * p.sw + kx * p.dw - p.pw;
        if (y >= 0 && y < p.h && x >= 0 && x < p.w) {
            v = ((const float*)p.x + img * p.x_bs)[((i64)ci * p.h + y) * p.w + x];
            if (p.quantize) v = (float)quant(v, 1.0f / ((const float*)p.s + img * p.s_bs)[0]);
        }
    }
    i64 at = (img * p.ppad + pix) * p.kpad + t;
    if (p.out_i8) ((signed char*)p.out)[at] = (signed char)(int)v;
    else ((h16*)p.out)[at] = f2h(v);
}

struct ConvOutArgs {
    int o, np, ppad, images, acc_i32, dequant;
    u64 c;  // column-major (images·ppad) × o: C[oc][img·ppad + pix]
    u64 bias;
    u64 wscale;
    u64 s; i64 s_bs;
    u64 out; i64 out_bs;
    Posts posts;
};

// A convolution's product (C = patches · wᵀ) into NCHW planes, plus bias;
// int8 sums dequantised with the image's scale and the channel's.
__global__ void ce_conv_out(ConvOutArgs p) {
    int pix = blockIdx.x * blockDim.x + threadIdx.x;
    if (pix >= p.np) return;
    i64 oc = blockIdx.y, img = blockIdx.z;
    i64 at = oc * ((i64)p.images * p.ppad) + img * p.ppad + pix;
    float v = p.acc_i32 ? (float)((const int*)p.c)[at] : ((const float*)p.c)[at];
    if (p.dequant) v = v * (((const float*)p.s + img * p.s_bs)[0] * ((const float*)p.wscale)[oc]);
    int o = (int)oc * p.np + pix;
    ((float*)p.out + img * p.out_bs)[o] = apply_posts(p.posts, img, o, v + ((const float*)p.bias)[oc]);
}

struct PoolArgs {
    int c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, normalize, count_include_pad;
    u64 x; i64 x_bs;
    u64 out; i64 out_bs;
    Posts posts;
};

// An average (or sum) pool over NCHW.
__global__ void ce_pool(PoolArgs p) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    i64 n = (i64)p.c * p.oh * p.ow;
    if (i >= n) return;
    i64 img = blockIdx.y;
    int ox = i % p.ow, oy = (i / p.ow) % p.oh, c = i / ((i64)p.ow * p.oh);
    const float* plane = (const float*)p.x + img * p.x_bs + (i64)c * p.h * p.w;
    float sum = 0.0f;
    int count = 0;
    for (int ky = 0; ky < p.kh; ++ky) {
        int y = oy * p.sh + ky - p.ph;
        for (int kx = 0; kx < p.kw; ++kx) {
            int x = ox * p.sw + kx - p.pw;
            if (y >= 0 && y < p.h && x >= 0 && x < p.w) {
                sum += plane[y * p.w + x];
                count++;
            }
        }
    }
    if (p.count_include_pad) count = p.kh * p.kw;
    ((float*)p.out + img * p.out_bs)[i] = apply_posts(p.posts, img, (int)i, (p.normalize && count > 0) ? sum / (float)count : sum);
}

}
