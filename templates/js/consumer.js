// {{name}}: a room consumer on the Switchyard JavaScript SDK.
//
// Route `ws/{{name}}/<str:room_name>/` ({{name}}.toml). A text frame
// `{"message": m}` reaches every socket of the room, the sender's too, as
// `{"message": m}`. switchyard-channels.js is the SDK, copied from
// {{sdk}}/sdk/js by `switchyard new` (componentize-js bundles only files
// it reaches by relative path).

import {
  ChannelLayerError,
  InvalidChannelName,
  JsonWebsocketConsumer,
  exportConsumer,
} from './switchyard-channels.js';

class RoomConsumer extends JsonWebsocketConsumer {
  connect() {
    this.roomGroupName = `{{name}}_${this.scope.url_route.kwargs.room_name}`;
    try {
      this.channelLayer.groupAdd(this.roomGroupName, this.channelName);
    } catch (err) {
      if (!(err instanceof InvalidChannelName)) throw err;
      // A room name that cannot be part of a group name: HTTP 403.
      this.close(4400, 'invalid room name');
      return;
    }
    this.accept();
  }

  disconnect(_code) {
    this.channelLayer.groupDiscard(this.roomGroupName, this.channelName);
  }

  receiveJson(content) {
    try {
      this.channelLayer.groupSend(this.roomGroupName, { type: 'room.message', message: content?.message ?? null });
    } catch (err) {
      if (!(err instanceof ChannelLayerError)) throw err;
      this.sendJson({ error: 'group_send_failed', detail: err.message });
    }
  }

  room_message(event) {
    this.sendJson({ message: event.message });
  }
}

export const websocketConsumer = exportConsumer(RoomConsumer);
