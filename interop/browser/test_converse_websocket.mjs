// Converse.js (npm) in headless Chromium logs in over WebSocket (RFC 7395) and chats with an
// slixmpp account; see converse_chat.mjs. Screenshot: $INTEROP_ARTIFACTS/converse-websocket.png.
import { converseChat } from "./converse_chat.mjs";

await converseChat("websocket", "test_converse_websocket.mjs");
