/* Prints 1536 64-byte lines (96 KiB: more than flint's 64 KiB console buffer and a small pipe
   hold), then exits with status 7 through the exit-status port. It finishes only if console
   output never blocks the vCPU. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    mov ecx, 1536
1:  lea rdi, [rip + m_line]
    call puts
    dec ecx
    jnz 1b
    mov dx, 0x501
    mov al, 7
    out dx, al
2:  hlt
    jmp 2b

#include "lib64.inc"

.section .rodata
m_line: .asciz "flint-fw: chatty 0123456789abcdefghijklmnopqrstuvwxyz0123456789\n"
