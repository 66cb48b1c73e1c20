#include <stddef.h>
#include <stdint.h>

// libFuzzer's driver (compiler-rt, FuzzerDriver.cpp). SwiftPM links an executable through its
// own entry point (MODULE_main), so libFuzzer's main() is not used: each target's @main calls this.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
