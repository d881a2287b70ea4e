//! The wire format as a peer sees it: framing edge cases, handshake rules and the
//! tolerance of messages from newer peers.

use capsa_proto::*;

fn frame_bytes(kind: Kind, channel: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(kind, channel, payload, &mut out).unwrap();
    out
}

#[test]
fn header_layout_is_length_channel_kind() {
    let bytes = frame_bytes(Kind::Data, 0x0102_0304, b"hi");
    assert_eq!(bytes, [0, 0, 0, 2, 1, 2, 3, 4, 16, b'h', b'i']);
}

#[test]
fn decoder_accepts_input_one_byte_at_a_time() {
    let mut wire = frame_bytes(Kind::Request, 7, br#"{"type":"ping"}"#);
    wire.extend(frame_bytes(Kind::Data, 9, b""));
    wire.extend(frame_bytes(Kind::Credit, 9, &5u32.to_be_bytes()));
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for byte in &wire {
        decoder.feed(std::slice::from_ref(byte));
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
    }
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].kind, Kind::Request);
    assert_eq!(frames[0].channel, 7);
    assert_eq!(frames[0].parse::<Request>().unwrap(), Request::Ping);
    assert_eq!(frames[1].kind, Kind::Data);
    assert!(frames[1].payload.is_empty());
    assert_eq!(frames[2].credit_bytes().unwrap(), 5);
    assert_eq!(decoder.pending(), 0);
    decoder.finish().unwrap();
}

#[test]
fn partial_frame_waits_and_truncation_is_reported_at_eof() {
    let wire = frame_bytes(Kind::Data, 1, b"hello world");
    assert!(decode(&wire[..5]).unwrap().is_none());
    assert!(decode(&wire[..wire.len() - 1]).unwrap().is_none());
    let (frame, used) = decode(&wire).unwrap().unwrap();
    assert_eq!(used, wire.len());
    assert_eq!(frame.payload, b"hello world");

    let mut decoder = Decoder::new();
    decoder.feed(&wire[..12]);
    assert!(decoder.next_frame().unwrap().is_none());
    let err = decoder.finish().unwrap_err();
    assert!(
        matches!(err, FrameError::Truncated { have: 12, need: 20 }),
        "{err}"
    );
}

#[test]
fn oversize_is_refused_both_ways_before_the_payload_arrives() {
    let big = vec![0u8; MAX_PAYLOAD + 1];
    let err = encode(Kind::Data, 1, &big, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, FrameError::Oversize { .. }));
    // Only the header of a huge frame: the decoder must fail now, not buffer.
    let mut header = ((MAX_PAYLOAD + 1) as u32).to_be_bytes().to_vec();
    header.extend([0, 0, 0, 1, 16]);
    let err = decode(&header).unwrap_err();
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
    // Exactly the maximum is fine.
    let max = vec![7u8; MAX_PAYLOAD];
    let wire = frame_bytes(Kind::Data, 1, &max);
    assert_eq!(decode(&wire).unwrap().unwrap().0.payload.len(), MAX_PAYLOAD);
}

#[test]
fn garbage_text_on_the_channel_is_an_error_not_a_hang() {
    // What a serial console or a login prompt would put on the wire.
    let mut decoder = Decoder::new();
    decoder.feed(b"Debian GNU/Linux 12 capsa ttyS0\r\nlogin: ");
    let err = decoder.next_frame().unwrap_err();
    assert!(matches!(err, FrameError::Oversize { .. }), "{err}");
    assert!(decoder.next_frame().is_err(), "stays failed");
}

#[test]
fn garbage_json_in_a_control_frame_is_a_clear_error() {
    let frame = Frame::new(Kind::Hello, 0, b"\x00\xffnot json".to_vec());
    let err = frame.parse::<Hello>().unwrap_err();
    assert!(
        err.to_string()
            .contains("malformed JSON in Hello frame on channel 0"),
        "{err}"
    );
    let credit = Frame::new(Kind::Credit, 3, vec![1, 2]);
    assert!(credit.credit_bytes().is_err());
}

#[test]
fn unknown_kinds_decode_and_keep_the_stream_in_sync() {
    let mut wire = frame_bytes(Kind::Unknown(200), 4, b"from the future");
    wire.extend(frame_bytes(Kind::Request, 5, br#"{"type":"info"}"#));
    let mut decoder = Decoder::new();
    decoder.feed(&wire);
    let first = decoder.next_frame().unwrap().unwrap();
    assert_eq!(first.kind, Kind::Unknown(200));
    assert_eq!(first.kind.code(), 200);
    let second = decoder.next_frame().unwrap().unwrap();
    assert_eq!(second.parse::<Request>().unwrap(), Request::Info);
    for code in 0..=255u8 {
        assert_eq!(Kind::from_code(code).code(), code);
    }
}

fn hello(version: u32, min_version: u32, features: &[&str]) -> Hello {
    let mut hello = Hello::new("test", features);
    hello.version = version;
    hello.min_version = min_version;
    hello
}

#[test]
fn both_sides_speak_the_lower_version_and_common_features() {
    let agent = hello(3, 1, &["exec", "pty", "teleport"]);
    let host = hello(1, 1, &["pty", "exec", "set_time"]);
    let negotiated = negotiate(&host, &agent).unwrap();
    assert_eq!(negotiated.version, 1);
    assert_eq!(negotiated.features, vec!["pty", "exec"]);
    assert!(negotiated.has("exec"));
    assert!(!negotiated.has("teleport"));
    assert_eq!(negotiate(&agent, &host).unwrap().version, 1);
}

#[test]
fn no_common_version_or_wrong_protocol_fails() {
    let agent = hello(5, 4, &[]);
    let host = hello(2, 1, &[]);
    let err = negotiate(&host, &agent).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no common protocol version: we speak 1..=2, the peer 4..=5"
    );
    let mut other = hello(1, 1, &[]);
    other.protocol = "ssh".into();
    assert!(matches!(
        negotiate(&host, &other),
        Err(HandshakeError::WrongProtocol(_))
    ));
}

#[test]
fn a_newer_peers_hello_with_unknown_fields_parses() {
    let json = br#"{"protocol":"capsa","version":9,"min_version":1,"features":["exec","x"],
        "software":"capsa-agent 9.0","guest":{"kernel":"6.1","cpus":2,"gpu":"none"},"colour":"blue"}"#;
    let hello: Hello = serde_json::from_slice(json).unwrap();
    assert_eq!(hello.version, 9);
    assert_eq!(hello.guest.unwrap().cpus, 2);
    let ours = Hello::new("capsa 0.1.0", &["exec"]);
    assert_eq!(
        negotiate(&ours, &hello_from(json)).unwrap().version,
        PROTOCOL_VERSION
    );
}

fn hello_from(json: &[u8]) -> Hello {
    serde_json::from_slice(json).unwrap()
}

#[test]
fn unknown_request_types_and_bad_fields_become_error_bodies() {
    let err = parse_request(br#"{"type":"teleport","to":"mars"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownRequest);
    assert!(err.message.contains("teleport"));
    let err = parse_request(br#"{"type":"exec","argv":"not a list"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    let err = parse_request(b"\x01\x02").unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    // Unknown fields in a known request are ignored (a newer host).
    let req = parse_request(br#"{"type":"exec","argv":["true"],"cgroup":"x"}"#).unwrap();
    let Request::Exec(exec) = req else { panic!() };
    assert_eq!(exec.argv, ["true"]);
    assert!(!exec.tty);
}

#[test]
fn messages_have_a_stable_json_shape() {
    let json = serde_json::to_string(&Request::SetTime(SetTimeRequest {
        unix_nanos: 1_700_000_000_000_000_000,
    }))
    .unwrap();
    assert_eq!(
        json,
        r#"{"type":"set_time","unix_nanos":1700000000000000000}"#
    );
    let json =
        serde_json::to_string(&Response::Ok(Reply::ExecStarted(ExecStarted { pid: 42 }))).unwrap();
    assert_eq!(json, r#"{"ok":{"type":"exec_started","pid":42}}"#);
    let json = serde_json::to_string(&Response::Error(ErrorBody::new(
        ErrorCode::NoSuchExec,
        "no exec 3",
    )))
    .unwrap();
    assert_eq!(
        json,
        r#"{"error":{"code":"no_such_exec","message":"no exec 3"}}"#
    );
    assert_eq!(
        serde_json::to_string(&Request::Shutdown).unwrap(),
        r#"{"type":"shutdown"}"#
    );
    for request in [
        Request::Ping,
        Request::Info,
        Request::Exec(ExecRequest::default()),
        Request::Resize(ResizeRequest {
            exec: 1,
            size: WinSize::default(),
        }),
        Request::Signal(SignalRequest {
            exec: 1,
            signal: "TERM".into(),
        }),
        Request::SetTime(SetTimeRequest { unix_nanos: 0 }),
        Request::SetAuthorizedKeys(SetAuthorizedKeysRequest { keys: vec![] }),
        Request::Shutdown,
    ] {
        let json = serde_json::to_vec(&request).unwrap();
        assert!(String::from_utf8_lossy(&json).contains(request.name()));
        assert_eq!(parse_request(&json).unwrap(), request);
    }
}

#[test]
fn unknown_replies_events_and_codes_from_newer_peers_are_tolerated() {
    let reply: Response = serde_json::from_str(r#"{"ok":{"type":"hologram","x":1}}"#).unwrap();
    assert_eq!(reply, Response::Ok(Reply::Unknown));
    let event: Event = serde_json::from_str(r#"{"type":"port_opened","port":80}"#).unwrap();
    assert_eq!(event, Event::Unknown);
    let body: ErrorBody =
        serde_json::from_str(r#"{"code":"quota_exceeded","message":"m"}"#).unwrap();
    assert_eq!(body.code, ErrorCode::Other);
}

#[test]
fn exit_status_follows_the_shell_convention() {
    let exit = |code, signal| {
        ExecExit {
            exec: 1,
            code,
            signal,
        }
        .shell_code()
    };
    assert_eq!(exit(Some(3), None), 3);
    assert_eq!(exit(None, Some(9)), 137);
}
