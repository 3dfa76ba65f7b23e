/* Reads one line from the serial console and prints it back: host stdin reaches the guest. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    lea rdi, [rip + m_ready]
    call puts
    lea rbx, [rip + line]
    xor ecx, ecx
1:  call getc
    cmp al, 10
    je 2f
    cmp al, 13
    je 2f
    cmp ecx, 255                       /* keep the last byte for the NUL */
    jae 1b
    mov byte ptr [rbx + rcx], al
    inc ecx
    jmp 1b
2:  mov byte ptr [rbx + rcx], 0
    lea rdi, [rip + m_got]
    call puts
    mov rdi, rbx
    call puts
    call newline
    jmp shutdown

#include "lib64.inc"

.section .rodata
m_ready: .asciz "flint-fw: ready\n"
m_got:   .asciz "flint-fw: got "
.section .bss
line: .skip 256
