//! A container's network, as podman (netavark), CNI or containerd set it up, handed to the VM.
//!
//! Those tools give the container a network namespace holding a veth with the container's
//! MAC, address and default route. A VM cannot use the veth itself, so flint (running in that
//! namespace, as a runtime's container process does) makes a TAP beside it and joins the two
//! with a tc redirect each way (Kata Containers' "tcfilter" model): every frame that arrives
//! on the veth leaves through the TAP to the guest, and every frame the guest sends leaves
//! through the veth. The guest's NIC takes the veth's MAC and the kernel configures its address
//! and default route from `ip=` on the command line, so the rest of the network (the bridge,
//! port forwarding, other containers) sees the same peer it would with crun.
//!
//! The veth keeps its address: no frame reaches the namespace's own stack any more, so it
//! never answers for the guest. The TAP is persistent: it goes with the namespace when the
//! engine removes it, and a later container in the same namespace (a restart) takes it again.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The TAP flint makes in a container's network namespace.
pub const TAP_NAME: &str = "flint0";

/// ETH_P_ALL: a filter for every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// The redirect filters' priority and handle (fixed, so that one container's pair is easy to
/// tell apart in `tc filter show`).
const FILTER_PRIORITY: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("the container's network namespace: {0}: {1}")]
    Netlink(String, std::io::Error),
    #[error("the container's network namespace: the kernel's answer to {0} could not be read")]
    Decode(String),
    #[error(
        "the container's network namespace has {} network interfaces ({}); flint gives the VM \
         one: run the container on one network",
        .0.len(),
        .0.join(", ")
    )]
    TooMany(Vec<String>),
    #[error(
        "the container's network interface {0} has no IPv4 address (flint configures the \
         guest's from it; IPv6-only networks are not supported yet)"
    )]
    NoAddress(String),
    #[error(
        "the container's network ({0}) is already another flint VM's: a pod's network goes to \
         one of its containers (run the pod's other containers with --network none, or one \
         container per pod)"
    )]
    Held(String),
    #[error("the container's network namespace: {0}")]
    Tap(#[from] flint_vmm::devices::virtio::net::tap::TapError),
}

/// What the VM gets in place of the container's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The container's interface (the veth), e.g. `eth0`.
    pub interface: String,
    /// The TAP joined to it, for the VM's NIC.
    pub tap: String,
    /// The interface's MAC, which the guest's NIC takes.
    pub mac: [u8; 6],
    /// Its MTU, which the guest's NIC is told (an overlay network's is below 1500).
    pub mtu: Option<u16>,
    /// The guest kernel's `ip=` argument: its address, netmask and gateway on `eth0`.
    pub kernel_arg: String,
}

/// The one interface (other than loopback) in the current network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interface {
    index: u32,
    name: String,
    mac: [u8; 6],
    mtu: Option<u32>,
    up: bool,
}

/// In the current thread's network namespace (the container's): makes the TAP [`TAP_NAME`],
/// joins it to the namespace's one interface both ways, and says what the guest needs. `None`
/// when the namespace has no interface but loopback (podman's `--network none`).
pub fn connect() -> Result<Option<Connected>, NetworkError> {
    let mut nl = Netlink::open()?;
    let Some(veth) = the_interface(&mut nl)? else {
        return Ok(None);
    };
    let (address, prefix) = nl
        .ipv4_address(veth.index)?
        .ok_or_else(|| NetworkError::NoAddress(veth.name.clone()))?;
    let gateway = nl.ipv4_gateway(veth.index)?;

    use flint_vmm::devices::virtio::net::tap::{Tap, TapError};
    match Tap::make_persistent(TAP_NAME) {
        // Another VMM (a container of the same pod) has the TAP open.
        Err(TapError::Busy(_)) => return Err(NetworkError::Held(veth.name)),
        other => other?,
    }
    let tap = nl
        .links()?
        .into_iter()
        .find(|l| l.name == TAP_NAME)
        .ok_or_else(|| {
            NetworkError::Netlink(
                format!("{TAP_NAME} was made but is not listed"),
                std::io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
    nl.set_up(tap.index, veth.mtu)?;
    if !veth.up {
        nl.set_up(veth.index, None)?;
    }
    for (from, to) in [(&veth, &tap), (&tap, &veth)] {
        nl.redirect(from, to)?;
    }
    Ok(Some(Connected {
        interface: veth.name.clone(),
        tap: TAP_NAME.into(),
        mac: veth.mac,
        mtu: veth
            .mtu
            .and_then(|m| u16::try_from(m).ok())
            .filter(|&m| m >= 68),
        kernel_arg: kernel_ip_arg(address, prefix, gateway),
    }))
}

/// The name of the current network namespace's one interface other than loopback (and
/// [`TAP_NAME`]), if it has one: what [`connect`] would join, found without changing anything.
pub fn interface() -> Result<Option<String>, NetworkError> {
    Ok(the_interface(&mut Netlink::open()?)?.map(|i| i.name))
}

fn the_interface(nl: &mut Netlink) -> Result<Option<Interface>, NetworkError> {
    let mut others: Vec<Interface> = nl
        .links()?
        .into_iter()
        .filter(|l| l.name != TAP_NAME)
        .collect();
    match others.len() {
        0 | 1 => Ok(others.pop()),
        _ => Err(NetworkError::TooMany(
            others.into_iter().map(|l| l.name).collect(),
        )),
    }
}

/// The kernel's `ip=client::gateway:netmask::eth0:off` (Documentation/admin-guide/nfs/
/// nfsroot.rst): a static address on the guest's one NIC, no autoconfiguration.
pub fn kernel_ip_arg(address: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> String {
    let mask = match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    };
    let gateway = gateway.map(|g| g.to_string()).unwrap_or_default();
    format!("ip={address}::{gateway}:{}::eth0:off", Ipv4Addr::from(mask))
}

/// A NETLINK_ROUTE socket with its requests' sequence numbers.
struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    fn open() -> Result<Netlink, NetworkError> {
        let io = |e| NetworkError::Netlink("opening a netlink socket".into(), e);
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Sends `message` and collects the answers up to the end of a dump or the
    /// acknowledgement; an error answer is returned as one.
    fn request(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetworkError> {
        let io = |e| NetworkError::Netlink(what.to_string(), e);
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(io)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        let mut receive = vec![0u8; 1 << 16];
        loop {
            let size = self.socket.recv(&mut &mut receive[..], 0).map_err(io)?;
            let mut offset = 0;
            while offset < size {
                let packet: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&receive[offset..size])
                        .map_err(|_| NetworkError::Decode(what.to_string()))?;
                let length = packet.header.length as usize;
                if packet.header.sequence_number == self.sequence {
                    match packet.payload {
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::Error(e) => match e.code {
                            Some(code) => {
                                return Err(io(std::io::Error::from_raw_os_error(-code.get())))
                            }
                            // The acknowledgement.
                            None => return Ok(answers),
                        },
                        NetlinkPayload::InnerMessage(m) => {
                            answers.push(m);
                            if !dump {
                                return Ok(answers);
                            }
                        }
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset = offset.saturating_add(length);
            }
        }
    }

    /// The interfaces but loopback.
    fn links(&mut self) -> Result<Vec<Interface>, NetworkError> {
        let answers = self.request(
            "listing its interfaces",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut links = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewLink(link) = answer else {
                continue;
            };
            if link.header.flags.contains(LinkFlags::Loopback) {
                continue;
            }
            let mut interface = Interface {
                index: link.header.index,
                name: String::new(),
                mac: [0; 6],
                mtu: None,
                up: link.header.flags.contains(LinkFlags::Up),
            };
            for attribute in link.attributes {
                match attribute {
                    LinkAttribute::IfName(name) => interface.name = name,
                    LinkAttribute::Address(a) if a.len() == 6 => interface.mac.copy_from_slice(&a),
                    LinkAttribute::Mtu(mtu) => interface.mtu = Some(mtu),
                    _ => {}
                }
            }
            links.push(interface);
        }
        Ok(links)
    }

    /// The first IPv4 address (and prefix length) on interface `index`.
    fn ipv4_address(&mut self, index: u32) -> Result<Option<(Ipv4Addr, u8)>, NetworkError> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let answers = self.request(
            "listing its addresses",
            RouteNetlinkMessage::GetAddress(query),
            NLM_F_DUMP,
        )?;
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(a) = answer else {
                continue;
            };
            if a.header.index != index || a.header.family != AddressFamily::Inet {
                continue;
            }
            for attribute in &a.attributes {
                if let AddressAttribute::Address(std::net::IpAddr::V4(v4)) = attribute {
                    return Ok(Some((*v4, a.header.prefix_len)));
                }
            }
        }
        Ok(None)
    }

    /// The IPv4 default route's gateway through interface `index` (main table), if any.
    fn ipv4_gateway(&mut self, index: u32) -> Result<Option<Ipv4Addr>, NetworkError> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let answers = self.request(
            "listing its routes",
            RouteNetlinkMessage::GetRoute(query),
            NLM_F_DUMP,
        )?;
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(r) = answer else {
                continue;
            };
            if r.header.destination_prefix_length != 0
                || r.header.table != netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
            {
                continue;
            }
            let (mut gateway, mut oif) = (None, None);
            for attribute in &r.attributes {
                match attribute {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if oif == Some(index) && gateway.is_some() {
                return Ok(gateway);
            }
        }
        Ok(None)
    }

    /// Brings interface `index` up, with `mtu` if given.
    fn set_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), NetworkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            link.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(
            &format!("bringing interface {index} up"),
            RouteNetlinkMessage::SetLink(link),
            NLM_F_ACK,
        )?;
        Ok(())
    }

    /// Every frame arriving on `from` leaves through `to`: an ingress qdisc on `from` (made
    /// anew, dropping any filters an earlier container left) with a u32 filter that matches
    /// all and a mirred action redirecting to `to`'s egress.
    fn redirect(&mut self, from: &Interface, to: &Interface) -> Result<(), NetworkError> {
        let what = |step: &str| format!("{step} on {}", from.name);
        let mut qdisc = TcMessage::with_index(from.index as i32);
        qdisc.header.parent = TcHandle::INGRESS;
        qdisc.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        qdisc.attributes.push(TcAttribute::Kind("ingress".into()));
        match self.request(
            &what("removing an old ingress qdisc"),
            RouteNetlinkMessage::DelQueueDiscipline(qdisc.clone()),
            NLM_F_ACK,
        ) {
            Ok(_) => {}
            // None there (ENOENT, or EINVAL from older kernels).
            Err(NetworkError::Netlink(_, e))
                if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL)) => {}
            Err(e) => return Err(e),
        }
        self.request(
            &what("adding an ingress qdisc"),
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;

        let mut mirred = TcMirror::default();
        let mut generic = TcActionGeneric::default();
        generic.action = TcActionType::Stolen;
        mirred.generic = generic;
        mirred.eaction = TcMirrorActionType::EgressRedir;
        mirred.ifindex = to.index;
        let mut action = TcAction::default();
        action.tab = 1;
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirred,
            ))]),
        ];
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()];
        let mut filter = TcMessage::with_index(from.index as i32);
        filter.header.parent = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        filter.header.info = (u32::from(FILTER_PRIORITY) << 16) | u32::from(ETH_P_ALL.to_be());
        filter.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(selector)),
                TcOption::U32(TcFilterU32Option::Action(vec![action])),
            ]),
        ];
        self.request(
            &what(&format!("adding a filter redirecting to {}", to.name)),
            RouteNetlinkMessage::NewTrafficFilter(filter),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
