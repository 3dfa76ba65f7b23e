/* Writes the boot-timer magic (123) to 0xd0000000, as a guest init does, then powers off.
   flint's boot page tables map only the first 1 GiB, so map the 2 MiB page holding the timer. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    mov rax, cr3                       /* PML4 */
    mov rbx, qword ptr [rax]
    and rbx, -4096                     /* PDPT */
    lea rcx, [rip + pd_high]
    mov rdx, rcx
    or rdx, 3                          /* present, writable */
    mov qword ptr [rbx + 3 * 8], rdx   /* 3 GiB .. 4 GiB */
    mov rdx, 0xd0000000 | 0x93         /* 2 MiB page, present, writable, uncached */
    mov qword ptr [rcx + 128 * 8], rdx /* (0xd0000000 - 0xc0000000) / 2 MiB = 128 */
    mov cr3, rax                       /* flush the TLB */
    mov rax, 0xd0000000
    mov byte ptr [rax], 123
    lea rdi, [rip + m_done]
    call puts
    jmp shutdown

#include "lib64.inc"

.section .rodata
m_done: .asciz "flint-fw: boot timer written\n"
.section .bss
.align 4096
pd_high: .skip 4096
