/* Says so, then runs forever: for tests that stop a VM from the host. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    lea rdi, [rip + m_spin]
    call puts
1:  pause
    jmp 1b

#include "lib64.inc"

.section .rodata
m_spin: .asciz "flint-fw: spinning\n"
