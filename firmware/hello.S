/* Long-mode entry: prints the boot parameters flint wrote (command line, e820 map), probes
   the CMOS and i8042 through real port exits, then powers off. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    mov r15, rsi                      /* struct boot_params (the zero page) */
    lea rdi, [rip + m_hello]
    call puts

    lea rdi, [rip + m_cmdline]
    call puts
    mov edi, dword ptr [r15 + 0x228]  /* hdr.cmd_line_ptr */
    call puts
    call newline

    lea rdi, [rip + m_e820n]
    call puts
    movzx r14d, byte ptr [r15 + 0x1e8] /* e820_entries */
    mov rax, r14
    call puthex
    call newline
    lea r13, [r15 + 0x2d0]            /* e820_table: addr u64, size u64, type u32 */
1:  test r14, r14
    jz 2f
    lea rdi, [rip + m_e820]
    call puts
    mov rax, qword ptr [r13]
    call puthex
    call space
    mov rax, qword ptr [r13 + 8]
    call puthex
    call space
    mov eax, dword ptr [r13 + 16]
    call puthex
    call newline
    add r13, 20
    dec r14
    jmp 1b
2:
    lea rdi, [rip + m_cmos]           /* CMOS status register D: 0x80 = valid */
    call puts
    mov al, 0x0d
    out 0x70, al
    in al, 0x71
    movzx eax, al
    call puthex
    call newline

    lea rdi, [rip + m_kbd]            /* i8042 self test: 0x55 = passed */
    call puts
    mov al, 0xaa
    out 0x64, al
    in al, 0x60
    movzx eax, al
    call puthex
    call newline

    lea rdi, [rip + m_bye]
    call puts
    jmp shutdown

#include "lib64.inc"

.section .rodata
m_hello:   .asciz "flint-fw: hello from long mode\n"
m_cmdline: .asciz "flint-fw: cmdline="
m_e820n:   .asciz "flint-fw: e820 entries="
m_e820:    .asciz "flint-fw: e820 "
m_cmos:    .asciz "flint-fw: cmos status d="
m_kbd:     .asciz "flint-fw: i8042 self test="
m_bye:     .asciz "flint-fw: bye\n"
