/* ProcessPrng for Wine 8 (Debian 12's), which lacks bcryptprimitives.dll: Rust's standard
 * library (1.78 and later) takes its randomness from it on Windows 10 and later, where the
 * real one always exists. Built and put beside the .exe files by the Wine end-to-end test
 * (tests/tests/windows.rs); never shipped. It forwards to RtlGenRandom (advapi32's
 * SystemFunction036), which Wine has. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
