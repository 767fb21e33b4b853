//! A publish to an exchange with a JSON Schema (`broker/schemas.rs`): the body is checked
//! here, on the publishing connection's task, before the message goes anywhere. A
//! message that fails goes to the exchange's invalid exchange (with `x-schema-error` and
//! `x-schema-name` headers) when it has one; otherwise it is refused: returned
//! (basic.return 312 NO_ROUTE with the error in the reply text) when mandatory, nacked
//! in confirm mode, and dropped (counted) in any case.

use super::send_message::Carrier;
use super::ChannelActor;
use crate::broker::publish::schema_reroute;
use crate::broker::queue::QueueEntry;
use crate::broker::schemas::Attached;
use actix::prelude::*;
use broker_core::Message;
use broker_wire::assembly::Content;
use broker_wire::protocol::{basic as b, AMQPClass};
use std::sync::Arc;

/// The queues a checked publish goes to, and the message (marked if it failed).
pub(super) type Checked = (Arc<[Arc<QueueEntry>]>, Content);

impl ChannelActor {
    /// Checks a publish against its exchange's schema. `Ok`: where it goes (its own
    /// route if valid, the invalid exchange's otherwise). `Err(())`: it failed and was
    /// refused here (returned, nacked: nothing else is to be done with it).
    pub(super) fn check_schema(
        &mut self,
        schema: &Attached,
        p: &b::Publish,
        queues: Arc<[Arc<QueueEntry>]>,
        mut content: Content,
        ctx: &mut Context<Self>,
    ) -> Result<Checked, ()> {
        let Err(error) = schema.check(&content.properties, &content.body) else {
            return Ok((queues, content));
        };
        let key = p.routing_key.as_str();
        if let Some(to) = schema_reroute(&self.vhost, schema, key, &content.properties) {
            let props = schema.mark((*content.properties).clone(), &error);
            content.raw_properties = broker_wire::encode::properties(&props);
            content.properties = props.into();
            return Ok((to.into(), content));
        }
        if p.mandatory {
            let text = schema.refusal(p.exchange.as_str(), &self.vhost.name, &error);
            let ret = AMQPClass::Basic(b::AMQPMethod::Return(b::Return {
                reply_code: 312,
                reply_text: text.as_str().into(),
                exchange: p.exchange.clone(),
                routing_key: p.routing_key.clone(),
            }));
            let msg = Message {
                exchange: Arc::from(p.exchange.as_str()),
                routing_key: Arc::from(p.routing_key.as_str()),
                properties: content.properties,
                raw_properties: content.raw_properties,
                body: content.body,
                persist_id: None,
                arrival_ms: crate::broker::runtime::now_ms(),
            };
            self.send_message(Carrier::Method(ret), &msg);
        }
        if let Some(c) = self.confirms.as_mut() {
            let seq = c.next();
            c.settle(seq, false);
            self.schedule_confirms(ctx);
        }
        Err(())
    }
}
