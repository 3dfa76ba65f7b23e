/* Loads an empty IDT and raises #UD: with nowhere to deliver it, the CPU triple-faults. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    lea rdi, [rip + m_fault]
    call puts
    lidt [rip + empty_idt]
    ud2

#include "lib64.inc"

.section .rodata
m_fault: .asciz "flint-fw: faulting\n"
.align 8
empty_idt:
    .word 0
    .quad 0
