use super::*;
use capsa_proto::MAX_DATA_CHUNK;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// A mux whose frames for the peer land in the returned receiver.
fn mux() -> (Arc<Mux>, UnboundedReceiver<Frame>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mux = Mux::new(move |frame| tx.send(frame).map_err(|_| Closed::new("test sink gone")));
    (mux, rx)
}

fn data(channel: u32, bytes: &[u8]) -> Frame {
    Frame::new(Kind::Data, channel, bytes.to_vec())
}

fn credits(frames: &mut UnboundedReceiver<Frame>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while let Ok(frame) = frames.try_recv() {
        assert_eq!(frame.kind, Kind::Credit, "unexpected frame {frame:?}");
        out.push((frame.channel, frame.credit_bytes().unwrap()));
    }
    out
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

#[tokio::test]
async fn a_stalled_outbound_stream_does_not_block_another() {
    let (mux, mut frames) = mux();
    let big = vec![7u8; INITIAL_WINDOW as usize + 1000];
    let a = tokio::spawn(
        mux.open_outbound(1)
            .unwrap()
            .pump(std::io::Cursor::new(big)),
    );
    let b = tokio::spawn(mux.open_outbound(2).unwrap().pump(&b"hello"[..]));

    let (mut sent_a, mut b_data, mut b_closed) = (0usize, Vec::new(), false);
    while sent_a < INITIAL_WINDOW as usize || !b_closed {
        let frame = frames.recv().await.unwrap();
        match (frame.channel, frame.kind) {
            (1, Kind::Data) => {
                assert!(frame.payload.len() <= MAX_DATA_CHUNK);
                sent_a += frame.payload.len();
            }
            (2, Kind::Data) => b_data.extend_from_slice(&frame.payload),
            (2, Kind::Close) => b_closed = true,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(b_data, b"hello");
    b.await.unwrap();
    settle().await;
    assert_eq!(sent_a, INITIAL_WINDOW as usize, "sent more than the window");
    assert!(
        frames.try_recv().is_err(),
        "stream 1 went on without credit"
    );
    assert!(!a.is_finished());

    // More than is left: the pump needs credit to read on and see the end.
    mux.handle(Frame::credit(1, 4096)).unwrap();
    a.await.unwrap();
    let rest = frames.recv().await.unwrap();
    assert_eq!(
        (rest.channel, rest.kind, rest.payload.len()),
        (1, Kind::Data, 1000)
    );
    let close = frames.recv().await.unwrap();
    assert_eq!((close.channel, close.kind), (1, Kind::Close));
    // A finished stream is out of the table: its id can be opened again.
    assert!(mux.open_outbound(1).is_ok());
}

#[tokio::test]
async fn write_all_waits_for_credit_in_chunks() {
    let (mux, mut frames) = mux();
    let mut out = mux.open_outbound(3).unwrap();
    let payload = vec![1u8; INITIAL_WINDOW as usize + 10];
    let writer = tokio::spawn(async move {
        out.write_all(&payload).await.unwrap();
        out
    });
    settle().await;
    assert!(!writer.is_finished(), "wrote past the window");
    mux.handle(Frame::credit(3, 10)).unwrap();
    let mut out = writer.await.unwrap();
    let mut sizes = Vec::new();
    while let Ok(frame) = frames.try_recv() {
        assert_eq!((frame.channel, frame.kind), (3, Kind::Data));
        sizes.push(frame.payload.len());
    }
    assert!(sizes.iter().all(|&n| n <= MAX_DATA_CHUNK));
    assert_eq!(sizes.iter().sum::<usize>(), INITIAL_WINDOW as usize + 10);

    out.close().unwrap();
    let close = frames.try_recv().unwrap();
    assert_eq!((close.channel, close.kind), (3, Kind::Close));
    out.close().unwrap();
    assert!(frames.try_recv().is_err(), "a second close was sent");
    assert_eq!(
        out.write_all(b"late").await,
        Err(Closed::new("stream 3 is closed"))
    );
}

#[tokio::test]
async fn a_stalled_inbound_stream_does_not_block_another() {
    let (mux, mut frames) = mux();
    let mut a = mux.open_inbound(1).unwrap();
    let mut b = mux.open_inbound(2).unwrap();
    for _ in 0..4 {
        mux.handle(data(1, &[0u8; 64 * 1024])).unwrap();
    }
    mux.handle(data(2, b"b")).unwrap();
    mux.handle(Frame::new(Kind::Close, 2, Vec::new())).unwrap();
    assert_eq!(b.recv().await.unwrap().as_deref(), Some(&b"b"[..]));
    assert_eq!(b.recv().await.unwrap(), None);
    assert_eq!(
        credits(&mut frames),
        [],
        "credit went back before anyone consumed"
    );

    let chunk = a.recv().await.unwrap().unwrap();
    a.credit(chunk.len());
    assert_eq!(credits(&mut frames), [(1, 64 * 1024)]);
}

#[tokio::test]
async fn credit_comes_back_for_data_nobody_reads() {
    let (mux, mut frames) = mux();
    let a = mux.open_inbound(1).unwrap();
    mux.handle(data(1, b"12345")).unwrap();
    mux.handle(data(1, b"678")).unwrap();
    drop(a);
    assert_eq!(credits(&mut frames), [(1, 8)], "buffered data on drop");
    mux.handle(data(1, b"later")).unwrap();
    assert_eq!(credits(&mut frames), [(1, 5)], "data after drop");
    mux.handle(data(9, b"unknown")).unwrap();
    assert_eq!(
        credits(&mut frames),
        [(9, 7)],
        "data on a stream never opened"
    );

    let _b = mux.open_inbound(2).unwrap();
    mux.handle(Frame::new(Kind::Close, 2, Vec::new())).unwrap();
    mux.handle(data(2, b"xy")).unwrap();
    assert_eq!(credits(&mut frames), [(2, 2)], "data after close");
}

#[tokio::test]
async fn a_failed_connection_ends_every_stream() {
    let (mux, mut frames) = mux();
    let mut inbound = mux.open_inbound(1).unwrap();
    let mut outbound = mux.open_outbound(2).unwrap();
    outbound
        .write_all(&vec![0u8; INITIAL_WINDOW as usize])
        .await
        .unwrap();
    let writer = tokio::spawn(async move { outbound.write_all(b"stuck").await });
    settle().await;
    while frames.try_recv().is_ok() {}

    assert!(mux.fail("peer went away"));
    assert!(!mux.fail("again"));
    assert_eq!(mux.dead().as_deref(), Some("peer went away"));
    let lost = Closed::new("peer went away");
    assert_eq!(inbound.recv().await, Err(lost.clone()));
    assert_eq!(inbound.recv().await, Ok(None));
    assert_eq!(writer.await.unwrap(), Err(lost.clone()));
    assert_eq!(mux.send(data(1, b"x")), Err(lost.clone()));
    assert!(matches!(mux.open_inbound(3), Err(OpenError::Closed(_))));
    drop(inbound);
    assert!(
        frames.try_recv().is_err(),
        "sent after the connection failed"
    );
}

#[tokio::test]
async fn an_open_id_is_refused_and_a_dropped_outbound_is_forgotten_silently() {
    let (mux, mut frames) = mux();
    let out = mux.open_outbound(1).unwrap();
    assert_eq!(mux.open_outbound(1).err(), Some(OpenError::InUse(1)));
    assert_eq!(mux.open_inbound(1).err(), Some(OpenError::InUse(1)));
    drop(out);
    assert!(frames.try_recv().is_err(), "a dropped stream told the peer");
    let _in = mux.open_inbound(1).unwrap();
    assert_eq!(mux.open_outbound(1).err(), Some(OpenError::InUse(1)));
    // Credit for a stream that is not ours is ignored; a malformed one is an error.
    mux.handle(Frame::credit(5, 10)).unwrap();
    assert!(mux.handle(Frame::new(Kind::Credit, 1, vec![1])).is_err());
}
