//! ACPI tables, so that a stock distribution kernel finds flint's devices by itself: its
//! CPUs and IOAPIC (MADT), its serial ports, CMOS RTC and virtio-mmio devices (DSDT:
//! `PNP0501`, `PNP0B00`, and `LNRO0005` with each device's window and interrupt, which a stock
//! kernel's `virtio_mmio` driver binds to), and how to power off and reset (a
//! hardware-reduced FADT with sleep control, sleep status and reset registers on I/O ports,
//! served by `devices::legacy::acpi_power`), and a power button a host can press (a Generic
//! Event Device on [`layout::GED_IRQ`]). Built with rust-vmm's `acpi_tables`.
//!
//! Layout, in the BIOS area that the e820 map reserves: the RSDP at [`layout::ACPI_START`]
//! (where Linux's scan of 0xE0000–0xFFFFF finds it even when the boot protocol does not say),
//! then the DSDT, FADT, MADT and XSDT; the VM generation ID on a page of its own at
//! [`layout::VMGENID_ADDR`].

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

const OEM_ID: [u8; 6] = *b"FLINT ";
const OEM_TABLE_ID: [u8; 8] = *b"FLINTVMM";
const OEM_REVISION: u32 = 1;

/// The sleep type flint's `_S5_` object gives for power-off; the guest writes it (shifted, with
/// SLP_EN) to the sleep control register.
pub const S5_SLEEP_TYPE: u8 = 5;
/// What the guest writes to the reset register to reset (flint ends the VM, as for a reboot).
pub const RESET_VALUE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("the ACPI tables ({0} bytes) do not fit below the VM generation ID's page")]
    TooBig(usize),
    #[error("writing the ACPI tables into guest memory failed")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// A legacy serial port (COM1, COM2) as the DSDT describes it.
#[derive(Debug, Clone, Copy)]
pub struct SerialPort {
    pub port: u16,
    pub irq: u32,
}

/// A virtio-mmio device's window and interrupt line.
#[derive(Debug, Clone, Copy)]
pub struct VirtioMmio {
    pub base: u64,
    pub len: u64,
    pub gsi: u32,
}

/// Everything the tables describe.
pub struct AcpiConfig<'a> {
    pub num_cpus: u8,
    pub serials: &'a [SerialPort],
    pub virtio: &'a [VirtioMmio],
    /// The VM generation ID (16 bytes at [`layout::VMGENID_ADDR`]): a guest reseeds its RNG
    /// when it changes, as after a restore from a snapshot.
    pub vm_generation_id: [u8; 16],
}

/// The tables, laid out from [`layout::ACPI_START`]: each table's guest address and bytes.
pub struct AcpiTables {
    pub rsdp_addr: u64,
    pub tables: Vec<(u64, Vec<u8>)>,
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// The next table's address after `addr` + `len`, 8-byte aligned.
fn after(addr: u64, len: usize) -> u64 {
    (addr + len as u64 + 7) & !7
}

/// The DSDT: `_S5_` and a device for each serial port and virtio-mmio window, under `\_SB_`.
fn dsdt(config: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    // Power-off: SLP_TYPa (and b) for S5.
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut body);
    let mut devices: Vec<Vec<u8>> = Vec::new();
    for (i, s) in config.serials.iter().enumerate() {
        let io = aml::IO::new(s.port, s.port, 1, 8);
        let irq = aml::Interrupt::new(true, true, false, false, s.irq);
        let crs = aml::ResourceTemplate::new(vec![&io, &irq]);
        let name = format!("COM{}", i + 1);
        let uid = u32::try_from(i + 1).unwrap_or(u32::MAX);
        devices.push(bytes(&aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CRS".into(), &crs),
            ],
        )));
    }
    // The CMOS RTC. Under hardware-reduced ACPI, Linux maps no legacy ISA interrupt by itself,
    // so its fallback platform device (IRQ 8 by convention) fails to probe (-EINVAL) and the
    // guest has no /dev/rtc0; described here, rtc_cmos binds through ACPI PNP instead. No
    // interrupt: flint's CMOS raises none (the guest reads the clock, without alarms), and GSI 8
    // may be a virtio device's.
    let cmos_io = aml::IO::new(
        layout::CMOS_PORT,
        layout::CMOS_PORT,
        1,
        u8::try_from(layout::CMOS_PORT_LEN).unwrap_or(2),
    );
    let rtc_crs = aml::ResourceTemplate::new(vec![&cmos_io]);
    devices.push(bytes(&aml::Device::new(
        "RTC0".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0B00")),
            &aml::Name::new("_CRS".into(), &rtc_crs),
        ],
    )));
    for (i, v) in config.virtio.iter().enumerate() {
        // Windows sit below 4 GiB by the layout (checked there); a device's window is 4 KiB.
        let base = layout::low32(v.base);
        let len = u32::try_from(v.len).unwrap_or(u32::MAX);
        let mem = aml::Memory32Fixed::new(true, base, len);
        // Edge-triggered, active high: how flint raises them (irqfd pulses or KVM_IRQ_LINE).
        let irq = aml::Interrupt::new(true, true, false, false, v.gsi);
        let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
        let name = format!("V{:03X}", i);
        let uid = u32::try_from(i).unwrap_or(u32::MAX);
        devices.push(bytes(&aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &"LNRO0005"),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CCA".into(), &aml::ONE),
                &aml::Name::new("_CRS".into(), &crs),
            ],
        )));
    }
    // The VM generation ID device (Microsoft's "Virtual Machine Generation ID" spec, which
    // Linux's vmgenid driver and Windows follow): ADDR gives the 16 bytes' address as two
    // DWORDs, low then high. Linux binds to the _HID VMGENCTR; the _CID is the spec's.
    let addr_low = layout::low32(layout::VMGENID_ADDR);
    devices.push(bytes(&aml::Device::new(
        "VGEN".into(),
        vec![
            &aml::Name::new("_HID".into(), &"VMGENCTR"),
            &aml::Name::new("_CID".into(), &"VM_Gen_Counter"),
            &aml::Name::new("_DDN".into(), &"VM_Gen_Counter"),
            &aml::Name::new("ADDR".into(), &aml::Package::new(vec![&addr_low, &0u32])),
        ],
    )));
    // The power button (a control-method button, as the FADT says) and the hardware-reduced
    // way to press it: a Generic Event Device whose interrupt makes Linux run `_EVT`, which
    // notifies the button (0x80: pressed); the guest's button driver turns that into a
    // KEY_POWER press, which systemd-logind answers with a clean power-off.
    devices.push(bytes(&aml::Device::new(
        "PWRB".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
        ],
    )));
    // Its second line says the VM generation ID changed (flint restored a snapshot): `_EVT`
    // gets the line's GSI and notifies VGEN, and Linux's vmgenid driver reads the new ID and
    // reseeds its RNG.
    let ged_irq = aml::Interrupt::new(true, true, false, false, layout::GED_IRQ);
    let vmgenid_irq = aml::Interrupt::new(true, true, false, false, layout::VMGENID_IRQ);
    let ged_crs = aml::ResourceTemplate::new(vec![&ged_irq, &vmgenid_irq]);
    let pwrb = aml::Path::new("\\_SB_.PWRB");
    let pressed = aml::Notify::new(&pwrb, &0x80u8);
    let vgen = aml::Path::new("\\_SB_.VGEN");
    let changed = aml::Notify::new(&vgen, &0x80u8);
    let button_gsi = layout::GED_IRQ;
    let vmgenid_gsi = layout::VMGENID_IRQ;
    let is_button = aml::Equal::new(&aml::Arg(0), &button_gsi);
    let is_vmgenid = aml::Equal::new(&aml::Arg(0), &vmgenid_gsi);
    let on_button = aml::If::new(&is_button, vec![&pressed]);
    let on_vmgenid = aml::If::new(&is_vmgenid, vec![&changed]);
    devices.push(bytes(&aml::Device::new(
        "GED0".into(),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0013"),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_CRS".into(), &ged_crs),
            &aml::Method::new("_EVT".into(), 1, true, vec![&on_button, &on_vmgenid]),
        ],
    )));
    body.extend(aml::Scope::raw("_SB_".into(), devices.concat()));

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&body);
    bytes(&dsdt)
}

/// A one-byte register at I/O port `port`.
fn io_byte(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// A hardware-reduced FADT: no legacy PM blocks; sleep control/status and reset registers.
fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep buttons.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    f.sleep_control_reg = io_byte(layout::ACPI_SLEEP_CONTROL_PORT);
    f.sleep_status_reg = io_byte(layout::ACPI_SLEEP_STATUS_PORT);
    f.reset_reg = io_byte(layout::ACPI_RESET_PORT);
    f.reset_value = RESET_VALUE;
    // IA-PC boot architecture: legacy devices (the UARTs, the RTC) and an 8042 are present;
    // no VGA; no MSI (there is no PCI).
    f.iapc_boot_arch = (1u16 | 1 << 1 | 1 << 2 | 1 << 3).into();
    f.hypervisor_vendor_identity = u64::from_le_bytes(*b"FLINTVMM").into();
    bytes(&f.finalize())
}

/// The MADT: a local APIC for each vCPU (APIC ID = index) and the IOAPIC, GSIs 0–23.
fn madt(num_cpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(layout::low32(layout::APIC_ADDR)),
    );
    for id in 0..num_cpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    // The IOAPIC's ID follows the CPUs', as in the MP table.
    m.add_structure(IoApic::new(num_cpus, layout::low32(layout::IOAPIC_ADDR), 0));
    bytes(&m)
}

/// Builds every table at its address (see the module's comment).
pub fn create_tables(config: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    let rsdp_addr = layout::ACPI_START;
    let dsdt_addr = after(rsdp_addr, Rsdp::len());
    let dsdt = dsdt(config);
    let fadt_addr = after(dsdt_addr, dsdt.len());
    let fadt = fadt(dsdt_addr);
    let madt_addr = after(fadt_addr, fadt.len());
    let madt = madt(config.num_cpus);
    let xsdt_addr = after(madt_addr, madt.len());
    let mut x = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    x.add_entry(fadt_addr);
    x.add_entry(madt_addr);
    let xsdt = bytes(&x);
    let end = xsdt_addr + xsdt.len() as u64;
    if end > layout::VMGENID_ADDR {
        return Err(AcpiError::TooBig(
            usize::try_from(end - rsdp_addr).unwrap_or(usize::MAX),
        ));
    }
    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    Ok(AcpiTables {
        rsdp_addr,
        tables: vec![
            (rsdp_addr, rsdp),
            (dsdt_addr, dsdt),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (xsdt_addr, xsdt),
            (layout::VMGENID_ADDR, config.vm_generation_id.to_vec()),
        ],
    })
}

/// Builds the tables and writes them into guest memory; returns the RSDP's address.
pub fn setup_acpi(mem: &GuestMemoryMmap, config: &AcpiConfig) -> Result<u64, AcpiError> {
    let t = create_tables(config)?;
    for (addr, data) in &t.tables {
        mem.write_slice(data, GuestAddress(*addr))
            .map_err(AcpiError::Write)?;
    }
    Ok(t.rsdp_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(num_cpus: u8, virtio: &[VirtioMmio]) -> AcpiTables {
        let serials = [
            SerialPort {
                port: layout::SERIAL_PORT,
                irq: layout::SERIAL_IRQ,
            },
            SerialPort {
                port: layout::SERIAL2_PORT,
                irq: layout::SERIAL2_IRQ,
            },
        ];
        create_tables(&AcpiConfig {
            num_cpus,
            serials: &serials,
            virtio,
            vm_generation_id: *b"0123456789abcdef",
        })
        .unwrap()
    }

    fn devices(n: u32) -> Vec<VirtioMmio> {
        (0..n)
            .map(|i| VirtioMmio {
                base: layout::VIRTIO_MMIO_START + u64::from(i) * 0x1000,
                len: 0x1000,
                gsi: layout::IRQ_DEVICES_START + i,
            })
            .collect()
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// (signature, address, bytes) of every table.
    fn by_signature(t: &AcpiTables) -> Vec<(String, u64, Vec<u8>)> {
        t.tables
            .iter()
            .filter(|(a, _)| *a != layout::VMGENID_ADDR)
            .map(|(a, b)| (String::from_utf8_lossy(&b[..4]).into_owned(), *a, b.clone()))
            .collect()
    }

    #[test]
    fn tables_are_well_formed_and_linked() {
        for (cpus, n) in [(1u8, 0u32), (2, 1), (8, 17), (255, 17)] {
            let t = config(cpus, &devices(n));
            let tables = by_signature(&t);
            let find = |sig: &str| tables.iter().find(|(s, _, _)| s == sig).unwrap().clone();
            // RSDP: both checksums, and it points at the XSDT.
            let (_, rsdp_addr, rsdp) = find("RSD ");
            assert_eq!(rsdp_addr, t.rsdp_addr);
            assert_eq!(&rsdp[..8], b"RSD PTR ");
            assert_eq!(sum(&rsdp[..20]), 0);
            assert_eq!(sum(&rsdp), 0);
            let (_, xsdt_addr, xsdt) = find("XSDT");
            assert_eq!(u64_at(&rsdp, 24), xsdt_addr);
            // Every table: its length field is its size, and it sums to 0.
            for (sig, addr, b) in &tables {
                assert!(*addr >= layout::ACPI_START && *addr + b.len() as u64 <= layout::ACPI_END);
                if sig != "RSD " {
                    assert_eq!(u32_at(b, 4) as usize, b.len(), "{sig}");
                    assert_eq!(sum(b), 0, "{sig} checksum");
                }
            }
            // No two tables overlap.
            let mut spans: Vec<(u64, u64)> = tables
                .iter()
                .map(|(_, a, b)| (*a, *a + b.len() as u64))
                .collect();
            spans.sort();
            assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:x?}");
            // The XSDT lists the FADT and the MADT; the FADT points at the DSDT.
            let entries: Vec<u64> = (36..xsdt.len())
                .step_by(8)
                .map(|i| u64_at(&xsdt, i))
                .collect();
            let (_, fadt_addr, fadt) = find("FACP");
            let (_, madt_addr, madt) = find("APIC");
            assert_eq!(entries, vec![fadt_addr, madt_addr]);
            let (_, dsdt_addr, _) = find("DSDT");
            assert_eq!(u64_at(&fadt, 140), dsdt_addr, "X_DSDT");
            // Hardware-reduced, with the reset register supported.
            let flags = u32_at(&fadt, 112);
            assert_ne!(flags & (1 << 20), 0);
            assert_ne!(flags & (1 << 10), 0);
            // The MADT: one enabled local APIC per vCPU (type 0), then the IOAPIC (type 1).
            let mut at = 44;
            let mut apics = Vec::new();
            let mut ioapics = 0;
            while at < madt.len() {
                let (kind, len) = (madt[at], madt[at + 1] as usize);
                match kind {
                    0 => {
                        assert_eq!(u32_at(&madt, at + 4), 1, "enabled");
                        apics.push(madt[at + 3]);
                    }
                    1 => {
                        ioapics += 1;
                        assert_eq!(u64::from(u32_at(&madt, at + 4)), layout::IOAPIC_ADDR);
                    }
                    other => panic!("unexpected MADT entry {other}"),
                }
                at += len;
            }
            assert_eq!(apics, (0..cpus).collect::<Vec<_>>());
            assert_eq!(ioapics, 1);
            // The generation ID, on its own page past every table.
            let id = t
                .tables
                .iter()
                .find(|(a, _)| *a == layout::VMGENID_ADDR)
                .unwrap();
            assert_eq!(id.1, b"0123456789abcdef");
            assert!(spans.iter().all(|s| s.1 <= layout::VMGENID_ADDR));
        }
    }

    #[test]
    fn the_dsdt_disassembles_to_the_devices_given() {
        // Read back by ACPICA's own disassembler (Debian's acpica-tools, which CI installs).
        if std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "iasl (acpica-tools) is missing, and CI installs it"
            );
            eprintln!("SKIPPED: no iasl (apt-get install acpica-tools)");
            return;
        }
        let t = config(2, &devices(2));
        let dir = std::env::temp_dir().join(format!("flint-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for (sig, _, b) in by_signature(&t) {
            if sig == "RSD " || sig == "XSDT" {
                continue;
            }
            let path = dir.join(format!("{sig}.dat"));
            std::fs::write(&path, &b).unwrap();
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&path)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "iasl -d {sig}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let dsl = std::fs::read_to_string(dir.join(format!("{sig}.dsl"))).unwrap();
            assert!(!dsl.contains("Invalid"), "{sig}:\n{dsl}");
            text.push_str(&dsl);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        for want in [
            "Name (_S5, Package (0x04)",
            "Device (COM1)",
            "Device (COM2)",
            "Name (_HID, EisaId (\"PNP0501\")",
            "IO (Decode16,\n                    0x03F8,",
            "Device (RTC0)",
            "Name (_HID, EisaId (\"PNP0B00\")",
            "IO (Decode16,\n                    0x0070,",
            "Device (V000)",
            "Device (V001)",
            "Name (_HID, \"LNRO0005\")",
            "Device (VGEN)",
            "Name (_HID, \"VMGENCTR\")",
            "Name (_CID, \"VM_Gen_Counter\")",
            "Name (ADDR, Package (0x02)\n            {\n                0x000FF000, \n                Zero\n            })",
            "Memory32Fixed (ReadWrite,\n                    0xD0001000,",
            "Memory32Fixed (ReadWrite,\n                    0xD0002000,",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000005,",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000006,",
            // The power button and the event device that presses it.
            "Device (PWRB)",
            "Name (_HID, EisaId (\"PNP0C0C\")",
            "Device (GED0)",
            "Name (_HID, \"ACPI0013\" /* Generic Event Device */)",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000017,",
            "Method (_EVT, 1, Serialized)",
            "Notify (\\_SB.PWRB, 0x80)",
            "Notify (\\_SB.VGEN, 0x80)",
            // FADT and MADT.
            "Hardware Reduced (V5) : 1",
            "Sleep Control Register : [Generic Address Structure]",
            "Local Apic ID : 01",
            "Subtable Type : 01 [I/O APIC]",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}
