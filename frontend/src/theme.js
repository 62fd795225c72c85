import { onBeforeUnmount, ref } from 'vue'

/** True while the system prefers a dark colour scheme; follows changes. */
export function useDarkMode() {
  const query = window.matchMedia?.('(prefers-color-scheme: dark)')
  const dark = ref(Boolean(query?.matches))
  const update = (event) => {
    dark.value = event.matches
  }
  query?.addEventListener?.('change', update)
  onBeforeUnmount(() => query?.removeEventListener?.('change', update))
  return dark
}
