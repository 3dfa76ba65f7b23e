/* Prints 64-byte lines forever: a guest whose console output nobody may be reading. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
1:  lea rdi, [rip + m_line]
    call puts
    jmp 1b

#include "lib64.inc"

.section .rodata
m_line: .asciz "flint-fw: chatty 0123456789abcdefghijklmnopqrstuvwxyz0123456789\n"
