import { useAuthStore } from '@/stores/auth'

/** An API error with the server's own words (a 422 names the parameter and why). */
export class ApiError extends Error {
  constructor(message, status) {
    super(message)
    this.status = status
  }
}

/**
 * GET an API path with the session's token. A 401 logs out (the token is gone or
 * revoked) and calls `onUnauthorized`; any other failure throws an ApiError.
 */
export async function apiGet(path, params, { onUnauthorized = () => {}, fetchImpl = fetch } = {}) {
  const auth = useAuthStore()
  const query = params ? `?${params}` : ''
  const response = await fetchImpl(`${path}${query}`, {
    headers: { Authorization: `Bearer ${auth.token}` },
  })
  if (response.status === 401) {
    auth.logout()
    onUnauthorized()
    throw new ApiError('Session expired', 401)
  }
  let body = null
  try {
    body = await response.json()
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) {
    const detail = Array.isArray(body?.detail)
      ? body.detail.map((d) => `${d.loc.at(-1)}: ${d.msg}`).join('; ')
      : body?.detail
    throw new ApiError(detail ?? `HTTP ${response.status}`, response.status)
  }
  return body
}
