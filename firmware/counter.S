/* Counts in memory and prints each count, "flint-fw: count N" (N in hex), with a delay loop
   between lines, forever: a guest whose progress a test can follow across a pause, or a
   snapshot and restore (the count lives in guest memory and registers, nowhere else). */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
1:  inc qword ptr [rip + count]
    lea rdi, [rip + m_count]
    call puts
    mov rax, qword ptr [rip + count]
    call puthex
    call newline
    mov ecx, 2000
2:  dec ecx
    jnz 2b
    jmp 1b

#include "lib64.inc"

.section .rodata
m_count: .asciz "flint-fw: count "

.data
count: .quad 0
