/* Stands in for Linux under `flint run --oci-bundle` (the fast tier cannot boot Linux): shows
   what flint set up for a bundle — the command line, the generated initramfs, the second UART
   (the workload's stderr), the end-of-input byte on the console — then reports the exit
   status 42 on the exit-status port, which flint must exit with. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    mov r15, rsi                      /* struct boot_params (the zero page) */
    lea rdi, [rip + m_cmdline]
    call puts
    mov edi, dword ptr [r15 + 0x228]  /* hdr.cmd_line_ptr */
    call puts
    call newline

    lea rdi, [rip + m_initrd]
    call puts
    mov eax, dword ptr [r15 + 0x21c]  /* hdr.ramdisk_size */
    call puthex
    call newline

    /* The second UART, COM2 at 0x2f8. */
    lea rdi, [rip + m_com2]
    mov dx, 0x2f8
1:  mov al, byte ptr [rdi]
    test al, al
    jz 2f
    out dx, al
    inc rdi
    jmp 1b
2:
    /* Console ready (flint holds input until then); with stdin at its end, flint sends one
       ^D (0x04). */
    mov al, 1
    mov dx, 0x502
    out dx, al
    call print_size
    call getc
    movzx eax, al
    mov r14, rax
    lea rdi, [rip + m_input]
    call puts
    mov rax, r14
    call puthex
    call newline
    call print_size

    mov al, 42
    mov dx, 0x501
    out dx, al
    /* Not reached when the port works; power-off (exit 0) would fail the test. */
    jmp shutdown

/* The host terminal's size from the console size port (rows << 16 | columns). */
print_size:
    lea rdi, [rip + m_size]
    call puts
    mov dx, 0x504
    in eax, dx
    call puthex
    jmp newline

#include "lib64.inc"

.section .rodata
m_cmdline: .asciz "flint-fw: cmdline="
m_initrd:  .asciz "flint-fw: initrd size="
m_com2:    .asciz "flint-fw: on COM2\n"
m_input:   .asciz "flint-fw: input="
m_size:    .asciz "flint-fw: size="
