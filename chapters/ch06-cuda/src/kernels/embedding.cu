// ANCHOR: embedding
// The residual stream starts as the tokens' embedding rows, kept in f32.
// embed: (vocab, hidden) T; tokens: (n); x: (n, hidden) f32. Grid: n blocks.
extern "C" __global__ void embedding(const T* __restrict__ embed, const int* __restrict__ tokens,
                                     float* __restrict__ x, int hidden) {
    PDL_ENTER();
    const T* src = embed + (size_t)tokens[blockIdx.x] * hidden;
    float* dst = x + (size_t)blockIdx.x * hidden;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) dst[j] = to_f(src[j]);
}
// ANCHOR_END: embedding

// Rows `idx` of src (rows, cols) into out (n, cols): the last token of each sequence, before lm_head.
extern "C" __global__ void gather_rows(const T* __restrict__ src, const int* __restrict__ idx,
                                       T* __restrict__ out, int cols) {
    PDL_ENTER();
    const T* s = src + (size_t)idx[blockIdx.x] * cols;
    T* d = out + (size_t)blockIdx.x * cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) d[j] = s[j];
}
