/* Entry for firmware written in C: flint enters in 64-bit long mode with RSI = the zero page
   (struct boot_params). Clears .bss, moves to a stack in .bss (the boot stack at 0x8ff0 has only
   4 KiB before the zero page), calls fw_main(boot_params), and powers off if it returns. */
.intel_syntax noprefix
.code64
.text
.global _start
_start:
    mov r12, rsi                       /* boot_params; rep stos uses rdi, rcx, rax */
    lea rdi, [rip + __bss_start]
    lea rcx, [rip + __bss_end]
    sub rcx, rdi
    shr rcx, 3                         /* the linker script aligns both ends to 8 bytes */
    xor eax, eax
    cld
    rep stosq
    lea rsp, [rip + stack_top]         /* 16-byte aligned before the call, as the ABI wants */
    mov rdi, r12
    call fw_main
    mov al, 0xfe                       /* i8042 reset: flint's power-off */
    out 0x64, al
1:  hlt
    jmp 1b

.section .bss
.align 16
stack: .skip 16384
stack_top:

.section .note.GNU-stack, "", @progbits
