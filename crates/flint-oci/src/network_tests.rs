use super::*;

#[test]
fn the_kernel_ip_argument_has_the_address_mask_and_gateway() {
    let a = Ipv4Addr::new(10, 88, 0, 5);
    assert_eq!(
        kernel_ip_arg(a, 16, Some(Ipv4Addr::new(10, 88, 0, 1))),
        "ip=10.88.0.5::10.88.0.1:255.255.0.0::eth0:off"
    );
    assert_eq!(
        kernel_ip_arg(a, 24, None),
        "ip=10.88.0.5:::255.255.255.0::eth0:off"
    );
    assert_eq!(
        kernel_ip_arg(a, 32, None),
        "ip=10.88.0.5:::255.255.255.255::eth0:off"
    );
    assert_eq!(
        kernel_ip_arg(a, 0, None),
        "ip=10.88.0.5:::0.0.0.0::eth0:off"
    );
    // A bad prefix from the kernel cannot overflow the shift.
    assert_eq!(
        kernel_ip_arg(a, 40, None),
        "ip=10.88.0.5:::255.255.255.255::eth0:off"
    );
}

#[test]
fn too_many_interfaces_is_one_line_naming_them() {
    let e = NetworkError::TooMany(vec!["eth0".into(), "eth1".into()]);
    let text = e.to_string();
    assert!(text.contains("2 network interfaces (eth0, eth1)"), "{text}");
    assert!(!text.contains('\n'));
}
