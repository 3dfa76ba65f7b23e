//! Legacy PC devices a Linux guest probes for: serial, i8042, CMOS/RTC, the ACPI power
//! registers, and the boot timer.
pub mod acpi_power;
pub mod boot_timer;
pub mod cmos;
pub mod console_out;
pub mod i8042;
pub mod serial;
