/* PVH entry: 32-bit protected mode, paging off, EBX = hvm_start_info. Prints what flint put
   there (magic, command line, memory map size, modules) and powers off. */
.intel_syntax noprefix
.code32
.text
.global _start
_start:
    mov esp, 0x8ff0                    /* PVH gives no stack */
    mov esi, ebx
    mov edi, offset m_hello
    call puts32
    mov edi, offset m_magic
    call puts32
    mov eax, dword ptr [esi]           /* magic */
    call puthex32
    call newline32
    mov edi, offset m_cmdline
    call puts32
    mov edi, dword ptr [esi + 0x18]    /* cmdline_paddr (low half) */
    call puts32
    call newline32
    mov edi, offset m_memmap
    call puts32
    mov eax, dword ptr [esi + 0x30]    /* memmap_entries */
    call puthex32
    call newline32
    mov edi, offset m_modules
    call puts32
    mov eax, dword ptr [esi + 0x0c]    /* nr_modules */
    call puthex32
    call newline32
    mov edi, offset m_bye
    call puts32
    mov al, 0xfe
    out 0x64, al
1:  hlt
    jmp 1b

putc32:
    push edx
    mov dx, 0x3f8
    out dx, al
    pop edx
    ret
puts32:
    push eax
    push edi
1:  mov al, byte ptr [edi]
    test al, al
    jz 2f
    call putc32
    inc edi
    jmp 1b
2:  pop edi
    pop eax
    ret
newline32:
    push eax
    mov al, 10
    call putc32
    pop eax
    ret
puthex32:
    push eax
    push ebx
    push ecx
    mov ebx, eax
    mov ecx, 8
1:  rol ebx, 4
    mov al, bl
    and al, 0xf
    cmp al, 10
    jb 2f
    add al, 'a' - 10
    jmp 3f
2:  add al, '0'
3:  call putc32
    dec ecx
    jnz 1b
    pop ecx
    pop ebx
    pop eax
    ret

.section .rodata
m_hello:   .asciz "flint-fw: hello from pvh\n"
m_magic:   .asciz "flint-fw: magic="
m_cmdline: .asciz "flint-fw: cmdline="
m_memmap:  .asciz "flint-fw: memmap entries="
m_modules: .asciz "flint-fw: modules="
m_bye:     .asciz "flint-fw: bye\n"

/* XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit PVH entry point. */
.section .note.Xen, "a"
.align 4
.long 4
.long 4
.long 18
.asciz "Xen"
.long _start
