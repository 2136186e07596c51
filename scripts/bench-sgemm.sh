#!/usr/bin/env bash
# What bounds encode (and so mining) speed on this machine: the FMA peak of its cores, the rate
# of the encoder's f32 matrix products in the gemm crate ragtune uses (`cargo bench --bench
# sgemm`, which also prints the encode-time floor those products set), and, where installed, the
# same products in OpenBLAS and BLIS (apt install libopenblas-dev libblis-dev). Every rate is for
# one single-threaded product per core running at the same time, as the encoder runs them.
#
#   bash scripts/bench-sgemm.sh [TOKENS_PER_PASS CORPUS_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cores=$(nproc)

cat > "$work/peak.c" <<'C'
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
/* 12 independent FMA chains: enough to fill both FMA pipes despite their latency. */
static void *chains(void *out) {
  __m256 a[12], b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  for (long k = 0; k < 100000000; k++)
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
  float s = 0;
  for (int i = 0; i < 12; i++) s += a[i][0];
  *(float *)out = s;
  return 0;
}
int main(int argc, char **argv) {
  int n = atoi(argv[1]);
  pthread_t t[64]; float s[64]; struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) pthread_create(&t[i], 0, chains, &s[i]);
  for (int i = 0; i < n; i++) pthread_join(t[i], 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("FMA peak, %d threads: %.1f GFLOPS (checksum %g)\n", n, n * 1e8 * 12 * 16 / dt / 1e9, s[0]);
}
C
if cc -O3 -march=native "$work/peak.c" -o "$work/peak" -lpthread 2>/dev/null; then
  "$work/peak" "$cores"
else
  echo "FMA peak: needs a C compiler and an AVX2/FMA CPU"
fi

cargo bench --quiet --bench sgemm -- "$@"

cat > "$work/blas.c" <<'C'
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static int M, K, N, REPS;
static void *run(void *out) {
  float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * N * K), *c = malloc(sizeof(float) * M * N);
  for (long i = 0; i < (long)M * K; i++) a[i] = (i % 7) * 0.1f - 0.3f;
  for (long i = 0; i < (long)N * K; i++) b[i] = (i % 5) * 0.1f - 0.2f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int r = 0; r < REPS; r++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *(double *)out = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  free(a); free(b); free(c);
  return 0;
}
int main(int argc, char **argv) {
  int threads = atoi(argv[1]), rows = atoi(argv[2]);
  int shapes[][3] = {{rows, 384, 1152}, {rows, 384, 384}, {rows, 384, 1536}, {rows, 1536, 384}, {239, 32, 239}, {239, 239, 32}};
  for (int s = 0; s < 6; s++) {
    M = shapes[s][0]; K = shapes[s][1]; N = shapes[s][2];
    REPS = (int)(25e9 / (2.0 * M * N * K)) + 1;
    pthread_t t[64]; double sec[64], slowest = 0;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, run, &sec[i]);
    for (int i = 0; i < threads; i++) { pthread_join(t[i], 0); if (sec[i] > slowest) slowest = sec[i]; }
    printf("  %5d x %4d x %4d: %6.1f GFLOPS\n", M, K, N, threads * REPS * 2.0 * M * N * K / slowest / 1e9);
  }
}
C
rows=${1:-7650}
if cc -O2 "$work/blas.c" -o "$work/openblas" -I/usr/include/x86_64-linux-gnu -lopenblas -lpthread 2>/dev/null; then
  echo "OpenBLAS, $cores concurrent single-threaded products:"
  OPENBLAS_NUM_THREADS=1 "$work/openblas" "$cores" "$rows"
else
  echo "OpenBLAS: not installed (libopenblas-dev)"
fi
if cc -O2 "$work/blas.c" -o "$work/blis" -I/usr/include/blis -lblis -lpthread 2>/dev/null; then
  echo "BLIS, $cores concurrent single-threaded products:"
  BLIS_NUM_THREADS=1 "$work/blis" "$cores" "$rows"
else
  echo "BLIS: not installed (libblis-dev)"
fi
