//! The few bytes the baselines speak: a length-prefixed frame (as the client protocol frames)
//! for the raw TCP ceiling, and MQTT 3.1.1 CONNECT/CONNACK/PINGREQ for Mosquitto.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is out of range")]
    BadLength(usize),
    #[error("MQTT connect refused (return code {0})")]
    Refused(u8),
    #[error("unexpected MQTT packet type {0:#x}")]
    Unexpected(u8),
}

/// Writes one frame: 4-byte big-endian length, then the body.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(body.len()).map_err(|_| WireError::BadLength(body.len()))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame body of at most `max` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>, WireError> {
    let len = r.read_u32().await? as usize;
    if len == 0 || len > max {
        return Err(WireError::BadLength(len));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// MQTT 3.1.1 CONNECT with a clean session.
pub fn mqtt_connect(client_id: &str, keepalive_s: u16) -> Vec<u8> {
    let id = client_id.as_bytes();
    let remaining = 10 + 2 + id.len();
    let mut packet = vec![0x10];
    let mut len = remaining;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02]);
    packet.extend_from_slice(&keepalive_s.to_be_bytes());
    packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
    packet.extend_from_slice(id);
    packet
}

/// Sends CONNECT and waits for an accepting CONNACK.
pub async fn mqtt_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    client_id: &str,
    keepalive_s: u16,
) -> Result<(), WireError> {
    stream.write_all(&mqtt_connect(client_id, keepalive_s)).await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    if connack[0] != 0x20 {
        return Err(WireError::Unexpected(connack[0]));
    }
    if connack[3] != 0 {
        return Err(WireError::Refused(connack[3]));
    }
    Ok(())
}

pub const MQTT_PINGREQ: [u8; 2] = [0xC0, 0x00];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_has_the_right_remaining_length() {
        let p = mqtt_connect("dev-1", 60);
        assert_eq!(p[0], 0x10);
        assert_eq!(p[1] as usize, p.len() - 2);
        assert_eq!(&p[p.len() - 5..], b"dev-1");
        let long = mqtt_connect(&"x".repeat(200), 60);
        assert_eq!(long[1] & 0x80, 0x80, "two-byte remaining length");
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"hello").await.unwrap();
        assert_eq!(read_frame(&mut b, 64).await.unwrap(), b"hello");
        write_frame(&mut a, &[0; 100]).await.unwrap();
        assert!(matches!(read_frame(&mut b, 64).await, Err(WireError::BadLength(100))));
    }
}
