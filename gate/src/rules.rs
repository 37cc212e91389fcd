//! What to do with client bytes, without I/O: framing with a size bound, the CONNECT decision,
//! and the verdict on every later client packet.

use crate::grant::{Grant, Refusal};
use crate::stats::Reason;
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, PubAck, PubComp, PubRec, PubRel, Publish, Subscribe, Unsubscribe,
};
use rumqttc::mqttbytes::{Error as MqttError, FixedHeader, PacketType, Protocol, QoS, check};

/// Longest fixed header: one type byte and four remaining-length bytes.
pub(crate) const MAX_FIXED_HEADER: usize = 5;

/// The result of looking for one whole packet at the front of the buffer.
#[derive(Debug)]
pub(crate) enum Framing {
    /// A whole packet, split off the buffer: its header and all its bytes (header included).
    Frame(FixedHeader, Bytes),
    /// At least this many more bytes are needed.
    Need(usize),
}

/// Splits one whole packet off `buf`. `max_packet_size` bounds the remaining length (variable
/// header and payload); a larger packet is refused from its fixed header alone, before its body
/// is read, so the buffer never holds more than `max_packet_size + MAX_FIXED_HEADER` bytes.
pub(crate) fn next_frame(buf: &mut BytesMut, max_packet_size: usize) -> Result<Framing, Reason> {
    match check(buf.iter(), max_packet_size) {
        Ok(header) => {
            let frame = buf.split_to(header.frame_length()).freeze();
            Ok(Framing::Frame(header, frame))
        }
        Err(MqttError::InsufficientBytes(n)) => Ok(Framing::Need(n)),
        Err(MqttError::PayloadSizeLimitExceeded(_)) => Err(Reason::Oversized),
        Err(_) => Err(Reason::ProtocolError),
    }
}

/// Whether the bytes received so far can still be the start of a CONNECT, whose first byte is
/// always 0x10. Lets the gate drop a client speaking something else (HTTP, TLS on the plain
/// port) at once instead of waiting for a packet length read from its text.
pub(crate) fn may_be_connect(buf: &[u8]) -> bool {
    buf.first().is_none_or(|&b| b == 0x10)
}

/// Parses the first packet of a connection, which must be an MQTT 3.1.1 CONNECT.
pub(crate) fn parse_connect(header: FixedHeader, frame: Bytes) -> Result<Connect, Reason> {
    if !matches!(header.packet_type(), Ok(PacketType::Connect)) {
        return Err(Reason::ProtocolError);
    }
    let connect = Connect::read(header, frame).map_err(|_| Reason::ProtocolError)?;
    if connect.protocol != Protocol::V4 {
        return Err(Reason::ProtocolError);
    }
    Ok(connect)
}

/// Turns the authorizer's answer on `connect` into the grant to enforce, or the CONNACK code
/// to refuse with and the reason to count. The will topic must be publishable under the grant.
pub(crate) fn admit(
    connect: &Connect,
    decision: Result<Grant, Refusal>,
) -> Result<Grant, (ConnectReturnCode, Reason)> {
    let grant = decision.map_err(|refusal| match refusal {
        Refusal::BadCredentials => (
            ConnectReturnCode::BadUserNamePassword,
            Reason::BadCredentials,
        ),
        Refusal::NotAuthorized => (ConnectReturnCode::NotAuthorized, Reason::NotAuthorized),
    })?;
    if let Some(will) = &connect.last_will
        && !grant.may_publish(&will.topic)
    {
        return Err((ConnectReturnCode::NotAuthorized, Reason::AclWill));
    }
    Ok(grant)
}

/// What to do with one client packet after CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Pass it to the broker unchanged.
    Forward,
    /// Close the connection and count this reason.
    Close(Reason),
}

/// Judges one client→broker packet of an admitted connection: PUBLISH topics must be granted,
/// SUBSCRIBE filters must each equal a granted filter, acknowledgements, UNSUBSCRIBE, PINGREQ
/// and DISCONNECT pass if well-formed; a second CONNECT or a packet only a broker sends closes.
pub(crate) fn judge(grant: &Grant, header: FixedHeader, frame: &Bytes) -> Verdict {
    let Ok(kind) = header.packet_type() else {
        return Verdict::Close(Reason::ProtocolError);
    };
    let frame = frame.clone();
    let well_formed = match kind {
        PacketType::Publish => {
            return match Publish::read(header, frame) {
                // Agents publish at QoS 1 only. rumqttd holds a QoS 2 publish in an unbounded
                // queue until the client's PUBREL, and the gate's backlog would count bytes the
                // collector never receives: one client could hold every socket paused.
                Ok(p) if p.qos == QoS::ExactlyOnce => Verdict::Close(Reason::ProtocolError),
                Ok(p) if grant.may_publish(&p.topic) => Verdict::Forward,
                Ok(_) => Verdict::Close(Reason::AclPublish),
                Err(_) => Verdict::Close(Reason::ProtocolError),
            };
        }
        PacketType::Subscribe => {
            return match Subscribe::read(header, frame) {
                Ok(s)
                    if !s.filters.is_empty()
                        && s.filters.iter().all(|f| grant.may_subscribe(&f.path)) =>
                {
                    Verdict::Forward
                }
                Ok(s) if !s.filters.is_empty() => Verdict::Close(Reason::AclSubscribe),
                _ => Verdict::Close(Reason::ProtocolError),
            };
        }
        PacketType::PubAck => PubAck::read(header, frame).is_ok(),
        PacketType::PubRec => PubRec::read(header, frame).is_ok(),
        PacketType::PubRel => PubRel::read(header, frame).is_ok(),
        PacketType::PubComp => PubComp::read(header, frame).is_ok(),
        PacketType::Unsubscribe => Unsubscribe::read(header, frame).is_ok(),
        PacketType::PingReq | PacketType::Disconnect => {
            header.frame_length() == 2 // no remaining bytes
        }
        PacketType::Connect
        | PacketType::ConnAck
        | PacketType::SubAck
        | PacketType::UnsubAck
        | PacketType::PingResp => false,
    };
    if well_formed {
        Verdict::Forward
    } else {
        Verdict::Close(Reason::ProtocolError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{ConnAck, LastWill, Packet, Unsubscribe};

    const MAX: usize = 1024;

    fn grant() -> Grant {
        Grant {
            identity: "pc-1".into(),
            publish: vec!["dozor/v1/pc-1/#".into()],
            subscribe: vec!["dozor/cmd/pc-1".into()],
        }
    }

    fn encode(packet: &Packet) -> BytesMut {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, usize::MAX).expect("encodes");
        buf
    }

    /// Frames `bytes` (which must hold one whole packet) and judges it under `grant()`.
    fn verdict_of(bytes: &[u8]) -> Verdict {
        let mut buf = BytesMut::from(bytes);
        match next_frame(&mut buf, MAX) {
            Ok(Framing::Frame(h, f)) => {
                assert!(buf.is_empty(), "exactly one packet");
                judge(&grant(), h, &f)
            }
            Ok(Framing::Need(n)) => panic!("incomplete, needs {n}"),
            Err(r) => Verdict::Close(r),
        }
    }

    #[track_caller]
    fn check(packet: Packet, expected: Verdict) {
        assert_eq!(verdict_of(&encode(&packet)), expected, "{packet:?}");
    }

    #[test]
    fn publish_and_subscribe_follow_the_grant() {
        let mut p = Publish::new("dozor/v1/pc-1/m", QoS::AtLeastOnce, "x");
        p.pkid = 7;
        check(Packet::Publish(p), Verdict::Forward);
        check(
            Packet::Publish(Publish::new("dozor/v1/pc-1/m", QoS::AtMostOnce, "x")),
            Verdict::Forward,
        );
        // QoS 2 is refused, even on a granted topic: agents use QoS 1, and rumqttd would hold
        // it, unbounded, until a PUBREL that need never come.
        let mut p = Publish::new("dozor/v1/pc-1/m", QoS::ExactlyOnce, "x");
        p.pkid = 8;
        check(Packet::Publish(p), Verdict::Close(Reason::ProtocolError));
        // QoS 1 with packet id 0 is malformed.
        let mut raw = vec![0x32, 20, 0, 15];
        raw.extend_from_slice(b"dozor/v1/pc-1/m");
        raw.extend_from_slice(&[0, 0, b'x']);
        assert_eq!(verdict_of(&raw), Verdict::Close(Reason::ProtocolError));
        check(
            Packet::Publish(Publish::new("dozor/v1/pc-2/m", QoS::AtMostOnce, "x")),
            Verdict::Close(Reason::AclPublish),
        );
        check(
            Packet::Publish(Publish::new("dozor/v1/pc-1/#", QoS::AtMostOnce, "x")),
            Verdict::Close(Reason::AclPublish),
        );

        let sub = |filters: &[&str]| {
            let mut s = Subscribe::new_many(filters.iter().map(|f| {
                rumqttc::mqttbytes::v4::SubscribeFilter::new((*f).into(), QoS::AtLeastOnce)
            }));
            s.pkid = 1;
            Packet::Subscribe(s)
        };
        check(sub(&["dozor/cmd/pc-1"]), Verdict::Forward);
        check(
            sub(&["dozor/cmd/pc-1", "dozor/cmd/#"]),
            Verdict::Close(Reason::AclSubscribe),
        );
        check(sub(&["#"]), Verdict::Close(Reason::AclSubscribe));
    }

    #[test]
    fn other_client_packets_pass_and_broker_packets_close() {
        check(Packet::PingReq, Verdict::Forward);
        check(Packet::Disconnect, Verdict::Forward);
        check(Packet::PubAck(PubAck::new(3)), Verdict::Forward);
        check(Packet::PubRec(PubRec::new(3)), Verdict::Forward);
        check(Packet::PubRel(PubRel::new(3)), Verdict::Forward);
        check(Packet::PubComp(PubComp::new(3)), Verdict::Forward);
        let mut unsub = Unsubscribe::new("anything/at/all");
        unsub.pkid = 2;
        check(Packet::Unsubscribe(unsub), Verdict::Forward);
        check(Packet::PingResp, Verdict::Close(Reason::ProtocolError));
        check(
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
            Verdict::Close(Reason::ProtocolError),
        );
        check(
            Packet::Connect(Connect::new("again")),
            Verdict::Close(Reason::ProtocolError),
        );
    }

    #[test]
    fn malformed_bytes_close_and_never_panic() {
        // Packet type 0 and 15 are reserved.
        assert_eq!(
            verdict_of(&[0x00, 0x00]),
            Verdict::Close(Reason::ProtocolError)
        );
        assert_eq!(
            verdict_of(&[0xF0, 0x00]),
            Verdict::Close(Reason::ProtocolError)
        );
        // PINGREQ with a body.
        assert_eq!(
            verdict_of(&[0xC0, 0x01, 0x00]),
            Verdict::Close(Reason::ProtocolError)
        );
        // PUBLISH whose topic length runs past the packet.
        assert_eq!(
            verdict_of(&[0x30, 0x03, 0x00, 0x09, b'a']),
            Verdict::Close(Reason::ProtocolError)
        );
        // SUBSCRIBE with no filters.
        assert_eq!(
            verdict_of(&[0x82, 0x02, 0x00, 0x01]),
            Verdict::Close(Reason::ProtocolError)
        );
        // A remaining length of five bytes.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert!(matches!(
            next_frame(&mut buf, usize::MAX),
            Err(Reason::ProtocolError)
        ));
        // Every prefix of every byte pair, and short garbage, is handled without panicking.
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 3, 0x7F, 0x80, 0xFF] {
                let mut buf = BytesMut::from(&[a, b, 0, 1, b'x', 0, 0][..]);
                if let Ok(Framing::Frame(h, f)) = next_frame(&mut buf, MAX) {
                    let _ = judge(&grant(), h, &f);
                    let _ = parse_connect(h, f);
                }
            }
        }
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        // A PUBLISH announcing 2 MB, of which only the fixed header has arrived.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
        assert!(matches!(next_frame(&mut buf, MAX), Err(Reason::Oversized)));
        // Exactly MAX remaining bytes is fine.
        let p = Publish::new("dozor/v1/pc-1/m", QoS::AtMostOnce, vec![0u8; MAX - 2 - 15]);
        assert_eq!(verdict_of(&encode(&Packet::Publish(p))), Verdict::Forward);
        let p = Publish::new(
            "dozor/v1/pc-1/m",
            QoS::AtMostOnce,
            vec![0u8; MAX - 2 - 15 + 1],
        );
        assert_eq!(
            verdict_of(&encode(&Packet::Publish(p))),
            Verdict::Close(Reason::Oversized)
        );
    }

    #[test]
    fn framing_waits_for_whole_packets_and_keeps_the_rest() {
        let mut bytes = encode(&Packet::PingReq);
        bytes.extend_from_slice(&encode(&Packet::Publish(Publish::new(
            "dozor/v1/pc-1/m",
            QoS::AtMostOnce,
            "payload",
        ))));
        let mut buf = BytesMut::new();
        assert!(matches!(next_frame(&mut buf, MAX), Ok(Framing::Need(2))));
        buf.extend_from_slice(&bytes[..1]);
        assert!(matches!(next_frame(&mut buf, MAX), Ok(Framing::Need(1))));
        // PINGREQ and the PUBLISH's fixed header.
        buf.extend_from_slice(&bytes[1..4]);
        let Ok(Framing::Frame(_, ping)) = next_frame(&mut buf, MAX) else {
            panic!("PINGREQ framed")
        };
        assert_eq!(&ping[..], &[0xC0, 0x00]);
        assert!(matches!(next_frame(&mut buf, MAX), Ok(Framing::Need(n)) if n == bytes.len() - 4));
        buf.extend_from_slice(&bytes[4..]);
        assert!(matches!(next_frame(&mut buf, MAX), Ok(Framing::Frame(..))));
        assert!(buf.is_empty());
    }

    fn framed_connect(connect: Connect) -> Result<Connect, Reason> {
        let mut buf = encode(&Packet::Connect(connect));
        match next_frame(&mut buf, MAX) {
            Ok(Framing::Frame(h, f)) => parse_connect(h, f),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_is_parsed_and_admitted() {
        let mut connect = Connect::new("pc-1");
        connect.set_login("pc-1", "secret");
        let parsed = framed_connect(connect.clone()).expect("a valid CONNECT");
        assert_eq!(parsed, connect);
        assert_eq!(admit(&parsed, Ok(grant())), Ok(grant()));
        assert_eq!(
            admit(&parsed, Err(Refusal::BadCredentials)),
            Err((
                ConnectReturnCode::BadUserNamePassword,
                Reason::BadCredentials
            ))
        );
        assert_eq!(
            admit(&parsed, Err(Refusal::NotAuthorized)),
            Err((ConnectReturnCode::NotAuthorized, Reason::NotAuthorized))
        );

        let will = |topic: &str| {
            let mut c = connect.clone();
            c.last_will = Some(LastWill::new(topic, "gone", QoS::AtLeastOnce, false));
            c
        };
        assert!(admit(&will("dozor/v1/pc-1/status"), Ok(grant())).is_ok());
        assert_eq!(
            admit(&will("dozor/v1/pc-2/status"), Ok(grant())),
            Err((ConnectReturnCode::NotAuthorized, Reason::AclWill))
        );
    }

    #[test]
    fn a_connect_is_recognised_from_its_first_byte() {
        assert!(may_be_connect(b""));
        assert!(may_be_connect(&encode(&Packet::Connect(Connect::new("x")))));
        assert!(!may_be_connect(b"GET / HTTP/1.1"));
        assert!(!may_be_connect(&[0x16, 0x03, 0x01])); // a TLS ClientHello
        assert!(!may_be_connect(&encode(&Packet::PingReq)));
    }

    #[test]
    fn first_packet_must_be_a_3_1_1_connect() {
        let mut v5 = Connect::new("pc-1");
        v5.protocol = Protocol::V5;
        assert_eq!(framed_connect(v5), Err(Reason::ProtocolError));
        let mut buf = encode(&Packet::PingReq);
        let Ok(Framing::Frame(h, f)) = next_frame(&mut buf, MAX) else {
            panic!("framed")
        };
        assert_eq!(parse_connect(h, f).err(), Some(Reason::ProtocolError));
    }
}
