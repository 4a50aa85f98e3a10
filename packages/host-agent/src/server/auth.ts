// Every RPC carries the host token (`Authorization: Bearer <token>`): the agent runs sandboxes as
// root and must answer only its control plane.
import { timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

export function hostTokenInterceptor(token: string): Interceptor {
  const expected = Buffer.from(`Bearer ${token}`);
  return (next) => async (req) => {
    const given = Buffer.from(req.header.get("authorization") ?? "");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new ConnectError("missing or wrong host token (Authorization: Bearer <token>)", Code.Unauthenticated);
    }
    return next(req);
  };
}
